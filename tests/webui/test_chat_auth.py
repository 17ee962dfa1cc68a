"""The chat page in front of a gateway with auth on: the API key field, a bad key, a rate limit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from tests.integration.processes import Cluster, Service, free_port, wait_until
from tests.webui.chat_helpers import REPLY, force_length, send, settings, wait_reply_done
from tests.webui.conftest import ADMIN_KEY, CHAT_MODEL
from tokenyard.governance.conversations import feedback_of
from tokenyard.store import Store

TENANT = "webui-tests"


@pytest.fixture(scope="module")
def auth_gateway(web_cluster: Cluster) -> Iterator[str]:
    """A second gateway over the same controller and store, with auth on."""
    port = free_port()
    env = {**web_cluster.env, "TOKENYARD_AUTH__ENABLED": "true"}
    args = ["gateway", "--port", str(port), "--controller", web_cluster.controller_url]
    gateway = Service("auth-gateway", args, web_cluster.log_dir, env).start()
    url = f"http://127.0.0.1:{port}"
    try:
        gateway.wait_http(f"{url}/health", timeout=60)
        yield url
    finally:
        gateway.stop()


def create_key(gateway: str, **limits: int) -> str:
    body = {"tenant": TENANT, **limits}
    response = httpx.post(
        f"{gateway}/admin/keys", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def use_key(page: Page, key: str) -> None:
    settings(page, api_key=key)


def test_a_bad_key_is_said_in_words(auth_gateway: str, page: Page) -> None:
    page.goto(f"{auth_gateway}/")
    expect(page.locator("#notice")).to_contain_text("Invalid or missing API key")  # no key yet
    use_key(page, "ty-not-a-real-key")
    expect(page.locator("#notice")).to_contain_text("Invalid or missing API key. Check the key in Settings.")
    expect(page.locator("#notice")).to_contain_text("Incorrect API key provided")  # the server's own words
    assert page.locator("#model option").count() == 0
    send(page, "hello")
    expect(page.locator("#notice")).to_contain_text("Pick a model first")


def test_a_good_key_travels_only_in_the_authorization_header(auth_gateway: str, page: Page) -> None:
    key = create_key(auth_gateway)
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    page.goto(f"{auth_gateway}/")
    use_key(page, key)
    page.wait_for_function("(m) => document.getElementById('model').value === m", arg=CHAT_MODEL)
    force_length(page, 6)
    send(page, "hello with a key")
    wait_reply_done(page)
    assert page.locator(f"{REPLY} .msg-error").is_hidden()
    assert page.evaluate("JSON.parse(localStorage.getItem('tokenyard.settings.v1')).apiKey") == key
    api_calls = [r for r in seen if "/v1/" in r.url]
    assert "authorization" not in api_calls[0].headers  # the model list on opening, before any key was set
    assert all(r.headers.get("authorization") == f"Bearer {key}" for r in api_calls[1:])
    assert any(r.url.endswith("/v1/chat/completions") for r in api_calls[1:])
    assert not any(key in r.url for r in seen)


def test_a_rate_limit_is_said_in_words(auth_gateway: str, page: Page) -> None:
    key = create_key(auth_gateway, rpm=1)  # POSTs count; listing the models does not
    page.goto(f"{auth_gateway}/")
    use_key(page, key)
    page.wait_for_function("(m) => document.getElementById('model').value === m", arg=CHAT_MODEL)
    force_length(page, 4)
    for count in (1, 2):
        send(page, f"message {count}")
        wait_reply_done(page, count=count)
    error = page.locator(REPLY).nth(1).locator(".msg-error")
    assert wait_until(error.is_visible, timeout=5)
    expect(error).to_contain_text("Too many requests")
    expect(error).to_contain_text("Try again in")


def test_a_vote_is_stored_with_the_conversation_log(web_cluster: Cluster, auth_gateway: str, page: Page) -> None:
    key = create_key(auth_gateway)
    page.goto(f"{auth_gateway}/")
    use_key(page, key)
    page.wait_for_function("(m) => document.getElementById('model').value === m", arg=CHAT_MODEL)
    force_length(page, 4)
    send(page, "rate me")
    wait_reply_done(page)
    page.locator(REPLY).get_by_role("button", name="Bad reply (thumbs down)").click()
    request_id = page.evaluate(
        "() => { const s = TYChat.state; const c = s.conversations.find(x => x.id === s.currentId);"
        " return TYConversations.find(c, c.leaf).stats.requestId; }"
    )
    assert request_id
    store = Store(web_cluster.env["TOKENYARD_DATABASE__URL"])
    try:
        assert wait_until(lambda: feedback_of(store, request_id, TENANT) == -1, timeout=10)
        page.locator(REPLY).get_by_role("button", name="Good reply (thumbs up)").click()
        assert wait_until(lambda: feedback_of(store, request_id, TENANT) == 1, timeout=10)  # the later vote wins
        assert feedback_of(store, request_id, "someone-else") is None
    finally:
        store.close()
    expect(page.locator("#notice")).to_be_hidden()  # no "kept in this browser only"


def test_votes_need_the_tenant_key(auth_gateway: str) -> None:
    body = {"request_id": "x", "vote": "up"}
    assert httpx.post(f"{auth_gateway}/v1/votes", json=body, timeout=5).status_code == 401
    key = create_key(auth_gateway)
    wrong = httpx.post(
        f"{auth_gateway}/v1/votes", json={**body, "vote": "meh"}, headers={"Authorization": f"Bearer {key}"}, timeout=5
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "vote"
