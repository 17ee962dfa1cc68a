"""Model output and pasted text can never inject markup or script into the chat page.

The page runs with its Content-Security-Policy bypassed here, so these tests hold the renderer
itself to account; the policy is a second wall, checked on its own at the end.
"""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.integration.processes import Cluster
from tests.webui.chat_helpers import REPLY, open_chat, send, wait_reply_done

# Each would run `__pwn(n)` (or alert) if it ever became markup.
HOSTILE = [
    "<img src=x onerror=__pwn(1)>",
    "<script>__pwn(2)</script>",
    "[click me](javascript:__pwn(3))",
    "<svg onload=__pwn(4)></svg>",
    "![pic](javascript:__pwn(5))",
    '<a href="javascript:__pwn(6)">link</a>',
    "```html\n<script>__pwn(7)</script>\n```",
    '<iframe src="javascript:__pwn(8)"></iframe>',
    "**<img src=x onerror=__pwn(9)>**",
    "[data](data:text/html,<script>__pwn(10)</script>)",
    "<style>body{display:none}</style>",
    "`<img src=x onerror=__pwn(11)>`",
    "| a | b |\n|---|---|\n| <img src=x onerror=__pwn(12)> | [x](javascript:__pwn(13)) |",
    "> <details open ontoggle=__pwn(14)>",
    "- <body onload=__pwn(15)>\n  - <input autofocus onfocus=__pwn(16)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=__pwn(17)>",
    "&lt;img src=x onerror=__pwn(18)&gt; &#60;script&#62;",
    "[x](  JaVaScRiPt:__pwn(19))",
    '<https://example.com/"onmouseover=__pwn(20)>',
]
TRAP = """
  window.__pwned = [];
  window.__pwn = (n) => window.__pwned.push(n);
  window.alert = window.confirm = window.prompt = (x) => window.__pwned.push('dialog:' + x);
"""
FORBIDDEN = "#messages img, #messages script, #messages svg, #messages iframe, #messages style, #messages input"


@pytest.fixture
def trapped(page: Page) -> Page:
    page.add_init_script(TRAP)
    page.on("dialog", lambda dialog: (page.evaluate("window.__pwned.push('real dialog')"), dialog.dismiss()))
    return page


def assert_nothing_ran(page: Page, settle_ms: int = 300) -> None:
    page.wait_for_timeout(settle_ms)  # time for an image error or a load handler to fire, had one got in
    assert page.evaluate("window.__pwned") == []
    assert page.locator(FORBIDDEN).count() == 0
    hrefs = page.eval_on_selector_all("#messages a", "as => as.map(a => a.href)")
    assert all(h.startswith(("http:", "https:", "mailto:")) for h in hrefs), hrefs


def fake_reply_stream(text: str):  # type: ignore[no-untyped-def]
    """Answer the chat call with `text` as a server-sent event stream, a few characters per event."""

    def answer(route: Route) -> None:
        events = [
            {"id": "chatcmpl-x", "choices": [{"index": 0, "delta": {"content": text[i : i + 7]}}]}
            for i in range(0, len(text), 7)
        ]
        events.append({"id": "chatcmpl-x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    return answer


def test_hostile_reply_is_shown_as_text(web_cluster: Cluster, trapped: Page) -> None:
    # No model writes these on request, so the reply stream is answered in the browser's network layer.
    text = "\n\n".join(HOSTILE)
    open_chat(trapped, web_cluster.gateway_url)
    trapped.route("**/v1/chat/completions", fake_reply_stream(text))
    send(trapped, "show me something nasty")
    wait_reply_done(trapped)
    reply = trapped.locator(f"{REPLY} .msg-body")
    expect(reply).to_contain_text("<img src=x onerror=__pwn(1)>")
    expect(reply).to_contain_text("<script>__pwn(2)</script>")
    expect(reply.locator("pre code")).to_contain_text("<script>__pwn(7)</script>")
    assert_nothing_ran(trapped)


def test_hostile_pasted_text_is_shown_as_text(web_cluster: Cluster, trapped: Page) -> None:
    open_chat(trapped, web_cluster.gateway_url)
    trapped.route("**/v1/chat/completions", fake_reply_stream("ok"))
    pasted = "\n".join(HOSTILE)
    trapped.fill("#input", pasted)
    trapped.press("#input", "Enter")
    wait_reply_done(trapped)
    assert trapped.locator("article.msg-user .msg-body").inner_text() == pasted
    expect(trapped.locator("#conversation-list")).to_contain_text("<img src=x onerror=__pwn(1)>")
    assert_nothing_ran(trapped)


def test_renderer_on_each_hostile_string_alone(web_cluster: Cluster, trapped: Page) -> None:
    open_chat(trapped, web_cluster.gateway_url)
    for text in HOSTILE:
        trapped.evaluate(
            "(t) => { const box = document.getElementById('messages'); box.replaceChildren(TYMarkdown.render(t)); }",
            text,
        )
        assert_nothing_ran(trapped, settle_ms=50)  # a failing image load is local: 50 ms is plenty


def test_markdown_still_renders_the_safe_parts(web_cluster: Cluster, page: Page) -> None:
    open_chat(page, web_cluster.gateway_url)
    source = (
        "# Title\n\n**bold** and *it* and `code` and [site](https://example.com)\n\n"
        "- a\n- b\n  1. c\n\n```py\nx = 1\n```"
    )
    render = "(t) => { const d = document.createElement('div'); d.append(TYMarkdown.render(t)); return d.innerHTML; }"
    html = page.evaluate(render, source)
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html and "<code>code</code>" in html
    assert '<a href="https://example.com/" rel="noopener noreferrer nofollow" target="_blank">site</a>' in html
    assert "<ul><li>a</li><li>b<ol><li>c</li></ol></li></ul>" in html
    assert '<code class="language-py">x = 1</code>' in html


def test_pages_forbid_inline_and_foreign_script(web_cluster: Cluster) -> None:
    for path in ("/", "/ui/chat.js"):
        response = httpx.get(f"{web_cluster.gateway_url}{path}", timeout=5)
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
