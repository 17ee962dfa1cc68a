"""The chat page in headless Chromium against a real gateway, controller and workers.

Each test opens `/`, works the page as a person would (clicks, keys) and checks what the page
shows and, where it matters, what the server did (the worker's /status after Stop).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.processes import Cluster, wait_until
from tests.webui.chat_helpers import (
    REPLY,
    force_length,
    open_chat,
    send,
    settings,
    stream_updates,
    wait_reply_done,
    watch_stream,
)
from tests.webui.conftest import CHAT_MODEL, EMBEDDING_MODEL

STATS = re.compile(r"^(\d+) tokens · TTFT \d+ ms · \d+\.\d tok/s")


def worker_status(cluster: Cluster, name: str = "chat") -> dict[str, int]:
    port = cluster.workers[name].port  # type: ignore[attr-defined]
    return dict(httpx.get(f"http://127.0.0.1:{port}/status", timeout=5).json())


def aborted_generations(cluster: Cluster, name: str = "chat") -> float:
    """A worker's own count of generations that ended because the client went away."""
    port = cluster.workers[name].port  # type: ignore[attr-defined]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tokenyard_request_success_total" and sample.labels.get("finished_reason") == "abort"
    )


def wait_generating(page: Page, cluster: Cluster, name: str = "chat") -> None:
    """Until the reply streams and the worker is generating it. (Not "until text shows": with
    ignore_eos the tiny model's random weights may emit end-of-text tokens, which print nothing,
    for a long stretch.)"""
    expect(page.locator("article.streaming")).to_have_count(1)
    assert wait_until(lambda: worker_status(cluster, name)["num_running"] == 1, timeout=15)
    page.wait_for_timeout(300)  # some tokens in


def test_model_picker_lists_chat_models_only(web_cluster: Cluster, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url)
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == [CHAT_MODEL], f"{EMBEDDING_MODEL} is not a chat model"


def test_reply_streams_token_by_token_with_its_measurements(web_cluster: Cluster, page: Page, artifacts: Path) -> None:
    open_chat(page, web_cluster.gateway_url)
    bodies = force_length(page, 40)
    settings(page, temperature="0.5", top_p="0.9", system="Answer briefly.")
    watch_stream(page)
    send(page, "Tell me about the quick brown fox.")
    expect(page.locator("#stop")).to_be_visible()  # while it streams, Send becomes Stop
    wait_reply_done(page)

    updates = stream_updates(page)
    assert len(set(updates)) >= 10, f"the reply appeared in {len(set(updates))} steps, not token by token"
    assert updates == sorted(updates), "the streamed text only grows"
    stats = page.locator(f"{REPLY} .msg-stats").inner_text()
    match = STATS.match(stats)
    assert match, stats
    assert int(match.group(1)) == 40  # the server's usage count, not a guess
    body = bodies[0]
    assert body["model"] == CHAT_MODEL and body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}  # type: ignore[index]
    expect(page.locator("#send")).to_be_visible()
    assert not page.script_errors  # type: ignore[attr-defined]
    page.screenshot(path=str(artifacts / "chat.png"))


def test_ime_composition_does_not_send_and_chinese_goes_through(web_cluster: Cluster, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url)
    bodies = force_length(page, 8)
    page.focus("#input")
    # Chromium's own IME path: a composition is open while Enter is pressed to pick the candidate.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.imeSetComposition", {"text": "你好", "selectionStart": 2, "selectionEnd": 2})
    page.evaluate(
        """() => document.getElementById('input').dispatchEvent(new KeyboardEvent('keydown',
             {key: 'Enter', code: 'Enter', keyCode: 229, isComposing: true, bubbles: true, cancelable: true}))"""
    )
    cdp.send("Input.insertText", {"text": "你好，世界"})
    assert page.input_value("#input") == "你好，世界"
    assert page.locator("article.msg").count() == 0, "an Enter inside a composition sent the message"

    page.press("#input", "Enter")
    wait_reply_done(page)
    assert bodies[0]["messages"] == [{"role": "user", "content": "你好，世界"}]
    expect(page.locator("article.msg-user .msg-body")).to_have_text("你好，世界")
    expect(page.locator("#conversation-list li.current")).to_contain_text("你好，世界")


def test_errors_are_shown_in_words(web_cluster: Cluster, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url)
    settings(page, max_tokens="100000")  # past the tiny model's 2048-token context: a real 400
    send(page, "hello")
    wait_reply_done(page)
    error = page.locator(f"{REPLY} .msg-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("too long for this model")

    settings(page, max_tokens="16")
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    send(page, "again")
    wait_reply_done(page, count=2)
    expect(page.locator(REPLY).nth(1).locator(".msg-error")).to_contain_text("Could not reach the server")


def test_unknown_model_error_names_the_problem(web_cluster: Cluster, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url)
    # A model that went away after the list was loaded: the gateway's real 404.
    page.evaluate(
        "() => { const o = new Option('gone-model', 'gone-model'); document.getElementById('model').add(o); }"
    )
    page.select_option("#model", "gone-model")
    send(page, "hello")
    wait_reply_done(page)
    expect(page.locator(f"{REPLY} .msg-error")).to_contain_text("Model not found")


def test_phone_sized_screen_is_usable(web_cluster: Cluster, browser_phone: Page, artifacts: Path) -> None:
    page = browser_phone
    open_chat(page, web_cluster.gateway_url)
    force_length(page, 12)
    expect(page.locator("#sidebar")).not_to_be_in_viewport()  # the list folds away on a phone
    send(page, "Hello from a phone")
    wait_reply_done(page)
    for selector in ("#input", "#send", "#model", REPLY):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, selector
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(artifacts / "chat-phone.png"))
    page.click("#open-sidebar")
    expect(page.locator("#sidebar")).to_be_in_viewport()
    page.click("#conversation-list li.current .conversation-title")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()


ERROR_WORDS = [
    (401, {"message": "Incorrect API key provided.", "code": "invalid_api_key"}, None, "Invalid or missing API key"),
    (429, {"message": "Rate limit reached.", "code": "rate_limit_exceeded"}, "7", "Try again in 7 s"),
    (429, {"message": "Daily calls used.", "code": "quota_exceeded"}, "3600", "Quota used up for this period"),
    (400, {"message": "The prompt contains a blocked word.", "code": "content_filtered"}, None, "content filter"),
    (503, {"message": "Loading.", "code": "model_loading"}, "5", "The model is still loading. Try again in 5 s"),
    (503, {"message": "No healthy worker serves `m`.", "code": "no_healthy_worker"}, None, "No worker is available"),
    (0, {"message": "stopped", "code": "content_filter"}, None, "stopped by the content filter"),
    (504, {"message": "Timed out after 600 s.", "code": "timeout"}, None, "took too long"),
]


def test_each_openai_error_reads_as_a_sentence(web_cluster: Cluster, page: Page) -> None:
    """The statuses and codes the gateway sends, as the page words them (the ones the tests above
    cannot provoke on this cluster: quotas, the word filter, a loading model, no worker)."""
    open_chat(page, web_cluster.gateway_url)
    for status, error, retry_after, words in ERROR_WORDS:
        said = page.evaluate("([s, e, r]) => TYApi.describe(s, e, r).message", [status, error, retry_after])
        assert words in said, (status, error, said)
        if status:
            assert error["message"] in said  # the server's own detail is kept
