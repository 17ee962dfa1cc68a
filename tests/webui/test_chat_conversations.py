"""Conversations in the browser: listed, searched, exported and imported as JSON; edit, branch,
regenerate, copy and votes."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, expect

from tests.integration.processes import Cluster
from tests.webui.chat_helpers import REPLY, force_length, open_chat, send, wait_reply_done

TITLES = "#conversation-list .conversation-title"
# The raw text of the reply at the end of the branch on screen.
SHOWN_REPLY = (
    "() => { const s = TYChat.state; const c = s.conversations.find(x => x.id === s.currentId);"
    " return TYConversations.find(c, c.leaf).content; }"
)


def chat(page: Page, text: str, replies: int) -> None:
    send(page, text)
    wait_reply_done(page, count=replies)


def test_conversations_are_listed_searched_exported_and_imported(
    web_cluster: Cluster, page: Page, context: BrowserContext, tmp_path: Path
) -> None:
    open_chat(page, web_cluster.gateway_url)
    force_length(page, 6)
    chat(page, "apples are red", 1)
    page.click("#new-chat")
    chat(page, "北京是中国的首都", 1)
    expect(page.locator(TITLES)).to_have_count(2)

    page.fill("#search", "首都")
    expect(page.locator(TITLES)).to_have_text(["北京是中国的首都"])
    page.fill("#search", "nothing like this")
    expect(page.locator("#conversation-list")).to_contain_text("No conversation matches.")
    page.fill("#search", "")

    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "export.json"
    download.value.save_as(exported)
    data = json.loads(exported.read_text(encoding="utf-8"))
    assert data["format"] == "tokenyard-conversations"
    contents = sorted(m["content"] for c in data["conversations"] for m in c["messages"] if m["role"] == "user")
    assert contents == ["apples are red", "北京是中国的首都"]

    fresh = context.browser.new_context(bypass_csp=True)  # type: ignore[union-attr]
    try:
        other = fresh.new_page()
        open_chat(other, web_cluster.gateway_url)
        expect(other.locator("#conversation-list")).to_contain_text("No conversations yet.")
        other.set_input_files("#import-file", str(exported))
        expect(other.locator("#sidebar-notice")).to_have_text("Imported 2 conversation(s).")
        expect(other.locator(TITLES)).to_have_count(2)
        other.locator(TITLES, has_text="北京").click()
        expect(other.locator("article.msg-user .msg-body")).to_have_text("北京是中国的首都")

        broken = tmp_path / "broken.json"
        broken.write_text('{"not": "an export"}')
        other.set_input_files("#import-file", str(broken))
        expect(other.locator("#sidebar-notice")).to_contain_text("not a tokenyard conversation export")
        other.reload()
        expect(other.locator(TITLES)).to_have_count(2)  # kept in local storage across reloads
    finally:
        fresh.close()


def test_edit_branches_and_both_branches_stay(web_cluster: Cluster, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url)
    force_length(page, 5)
    chat(page, "first question", 1)
    page.locator("article.msg-user").get_by_role("button", name="Edit and branch from here").click()
    page.fill("article.msg-user textarea", "second question")
    page.locator("article.msg-user").get_by_role("button", name="Send the edited message as a new branch").click()
    wait_reply_done(page)
    user = page.locator("article.msg-user")
    expect(user.locator(".msg-body")).to_have_text("second question")
    expect(user.locator(".branch-count")).to_have_text("2/2")
    user.get_by_role("button", name="Previous version").click()
    expect(page.locator("article.msg-user .msg-body")).to_have_text("first question")
    expect(page.locator(REPLY)).to_have_count(1)  # the first branch's own reply


def test_regenerate_copy_and_vote(web_cluster: Cluster, page: Page, context: BrowserContext) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_chat(page, web_cluster.gateway_url)
    force_length(page, 5)
    chat(page, "say something", 1)
    # innerText, compared as innerText below: a Markdown line break is a <br>, which textContent drops.
    first = page.locator(f"{REPLY} .msg-body").inner_text()
    first_raw = page.evaluate(SHOWN_REPLY)
    page.get_by_role("button", name="Regenerate this reply").click()
    wait_reply_done(page)
    expect(page.locator(f"{REPLY} .branch-count")).to_have_text("2/2")

    page.locator(REPLY).get_by_role("button", name="Copy this message").click()
    expect(page.locator("#notice")).to_have_text("Copied.")
    copied = page.evaluate("navigator.clipboard.readText()")
    shown = page.evaluate(SHOWN_REPLY)
    assert copied == shown and copied  # the raw reply, Markdown source included
    page.get_by_role("button", name="Previous version").click()
    expect(page.locator(f"{REPLY} .msg-body")).to_have_text(first, use_inner_text=True)
    assert page.evaluate(SHOWN_REPLY) == first_raw

    up = page.locator(REPLY).get_by_role("button", name="Good reply (thumbs up)")
    up.click()
    expect(page.locator(REPLY).get_by_role("button", name="Good reply (thumbs up)")).to_have_attribute(
        "aria-pressed", "true"
    )
    stored = page.evaluate("JSON.parse(localStorage.getItem('tokenyard.conversations.v1'))")
    votes = [m.get("vote") for c in stored for m in c["messages"] if m["role"] == "assistant"]
    assert sorted(v for v in votes if v) == ["up"]
