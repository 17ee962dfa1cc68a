"""Steps the chat-page tests share: open the page, send, wait for the reply, lengthen generations."""

from __future__ import annotations

import json

from playwright.sync_api import Page, Route

REPLY = "article.msg-assistant"


def open_chat(page: Page, base_url: str, model: str = "tiny-chat") -> None:
    page.goto(f"{base_url}/")
    page.wait_for_function("(m) => [...document.querySelectorAll('#model option')].some(o => o.value === m)", arg=model)
    page.select_option("#model", model)


def settings(page: Page, **fields: str) -> None:
    """Fill Settings fields by element id (`max_tokens` -> #max-tokens) and leave the panel closed."""
    page.click("#toggle-settings")
    for name, value in fields.items():
        page.fill(f"#{name.replace('_', '-')}", value)
        page.dispatch_event(f"#{name.replace('_', '-')}", "change")
    page.click("#toggle-settings")


def send(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_reply_done(page: Page, count: int = 1, timeout: float = 60_000) -> None:
    """Until `count` replies are on screen and none is still streaming."""
    page.wait_for_function(
        "(n) => document.querySelectorAll('article.msg-assistant').length >= n"
        " && !document.querySelector('article.streaming')",
        arg=count,
        timeout=timeout,
    )


def force_length(page: Page, max_tokens: int) -> list[dict[str, object]]:
    """Make every chat request generate exactly `max_tokens` tokens (the tiny model's random weights
    would stop at a random end-of-text). Returns the list that collects each request body sent."""
    bodies: list[dict[str, object]] = []

    def lengthen(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        bodies.append(body)
        body.update(ignore_eos=True, max_tokens=max_tokens)
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", lengthen)
    return bodies


def watch_stream(page: Page) -> None:
    """Count, in the page, each change of a streaming reply's text (read back by `stream_updates`)."""
    page.evaluate(
        """() => {
        window.__updates = [];
        new MutationObserver(() => {
          const live = document.querySelector('article.streaming .msg-body');
          if (live) window.__updates.push(live.textContent.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }"""
    )


def stream_updates(page: Page) -> list[int]:
    return list(page.evaluate("window.__updates"))
