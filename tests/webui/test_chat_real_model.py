"""The chat page with the real default model (smollm2-135m-instruct): Stop and Esc end the generation
on the worker (the real model is slow enough that a long reply is surely still running when Stop is
pressed; the tiny model can finish 1,800 tokens in a second), a Chinese question answered in Chinese,
and a Markdown answer with a code block (the screenshot for the README)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.integration.processes import Cluster, wait_until
from tests.webui.chat_helpers import REPLY, force_length, open_chat, send, settings, wait_reply_done
from tests.webui.test_chat_page import aborted_generations, wait_generating, worker_status
from tokenyard.models import SMOLLM2_ALIAS, ResolvedModel

CJK_RUN = re.compile(r"[\u4e00-\u9fff]{4,}")


@pytest.fixture(scope="module")
def real_model(web_cluster: Cluster, default_chat_model: ResolvedModel) -> Iterator[str]:
    """The default chat model on its own worker, for this module only."""
    web_cluster.start_worker("real", str(default_chat_model.path), "--model-name", SMOLLM2_ALIAS)
    assert wait_until(lambda: SMOLLM2_ALIAS in web_cluster.model_ids(), timeout=15), web_cluster.logs()
    yield SMOLLM2_ALIAS
    web_cluster.workers.pop("real").stop()
    assert wait_until(lambda: SMOLLM2_ALIAS not in web_cluster.model_ids(), timeout=15)


def test_stop_ends_the_generation_on_the_worker(web_cluster: Cluster, real_model: str, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url, model=real_model)
    force_length(page, 4000)
    aborted_before = aborted_generations(web_cluster, "real")
    send(page, "Go on for a long time.")
    wait_generating(page, web_cluster, "real")
    page.click("#stop")

    wait_reply_done(page)
    assert wait_until(lambda: worker_status(web_cluster, "real")["num_running"] == 0, timeout=5), (
        "the worker still runs it"
    )
    assert "aborted after" in web_cluster.workers["real"].logs()
    assert wait_until(lambda: aborted_generations(web_cluster, "real") == aborted_before + 1, timeout=5)
    stats = page.locator(f"{REPLY} .msg-stats").inner_text()
    assert stats.endswith("stopped"), stats
    assert int(stats.split()[0]) < 4000


def test_enter_sends_shift_enter_breaks_the_line_and_esc_stops(
    web_cluster: Cluster, real_model: str, page: Page
) -> None:
    open_chat(page, web_cluster.gateway_url, model=real_model)
    force_length(page, 4000)
    page.fill("#input", "first line")
    page.press("#input", "Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#input") == "first line\nsecond line"
    assert page.locator("article.msg").count() == 0  # Shift+Enter sent nothing

    page.press("#input", "Enter")
    expect(page.locator("article.msg-user .msg-body")).to_have_text("first line\nsecond line")
    wait_generating(page, web_cluster, "real")
    page.keyboard.press("Escape")
    wait_reply_done(page)
    assert page.locator(f"{REPLY} .msg-stats").inner_text().endswith("stopped")
    assert wait_until(lambda: worker_status(web_cluster, "real")["num_running"] == 0, timeout=5)


def test_chinese_question_is_answered_in_chinese(web_cluster: Cluster, real_model: str, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url, model=real_model)
    settings(page, temperature="0", max_tokens="24")
    send(page, "请用中文介绍一下你自己。")
    wait_reply_done(page)
    expect(page.locator("article.msg-user .msg-body")).to_have_text("请用中文介绍一下你自己。")
    reply = page.locator(f"{REPLY} .msg-body").inner_text()
    assert CJK_RUN.search(reply), reply
    assert "\ufffd" not in reply.rstrip("\ufffd"), f"a character was cut inside the reply: {reply!r}"
    assert page.locator(f"{REPLY} .msg-error").is_hidden()


def test_markdown_answer_for_the_readme(web_cluster: Cluster, real_model: str, page: Page, artifacts: Path) -> None:
    open_chat(page, web_cluster.gateway_url, model=real_model)
    settings(page, temperature="0", max_tokens="160")
    send(page, "Write a Python function that reverses a string, with a short explanation.")
    wait_reply_done(page, timeout=120_000)
    assert page.locator(f"{REPLY} pre code").count() >= 1, page.locator(REPLY).inner_text()
    page.screenshot(path=str(artifacts / "chat-real-model.png"))
