"""The client's address, X-Forwarded-For from trusted proxies only, and the IP allow-lists (403)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway.test_auth import CHAT, assert_openai_error, bearer
from tokenyard.config import GatewayConfig, Settings
from tokenyard.gateway.app import create_app
from tokenyard.gateway.client_address import client_address
from tokenyard.governance import keys, tenants
from tokenyard.governance.config import AuthConfig
from tokenyard.governance.keys import KeySettings
from tokenyard.governance.networks import parse_network
from tokenyard.governance.tenants import TenantSettings
from tokenyard.store import Store

PROXIES = [parse_network("10.0.0.0/8"), parse_network("fd00::/8")]


def scope(peer: str, *forwarded: str) -> dict[str, object]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"client": (peer, 5000), "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", [], "203.0.113.7"),
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not a proxy: its header is the client's word
        ("10.1.1.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.1.1", ["1.2.3.4, 198.51.100.1, 10.2.2.2"], "198.51.100.1"),  # spoofed left part ignored
        ("10.1.1.1", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # several headers read as one list
        ("10.1.1.1", ["garbage"], "10.1.1.1"),
        ("fd00::5", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:203.0.113.9", [], "203.0.113.9"),
        ("2001:db8::1", ["10.9.9.9"], "2001:db8::1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    assert str(client_address(scope(peer, *forwarded), PROXIES)) == expected


def client(app: object, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_the_service_allow_list_with_and_without_a_trusted_proxy() -> None:
    settings = Settings(
        gateway=GatewayConfig(controller="http://127.0.0.1:9"),
        ip_allowlist=["192.0.2.0/24", "2001:db8:1::/48"],
        trusted_proxies=["10.0.0.0/8"],
    )
    app = create_app(settings)
    body = {"model": "m", **CHAT}
    cases = [
        ("192.0.2.9", {}, True),
        ("198.51.100.9", {}, False),
        ("198.51.100.9", {"X-Forwarded-For": "192.0.2.9"}, False),  # untrusted peer cannot claim an address
        ("10.0.0.2", {"X-Forwarded-For": "192.0.2.9"}, True),
        ("10.0.0.2", {"X-Forwarded-For": "192.0.2.9, 198.51.100.9"}, False),
        ("10.0.0.2", {}, False),  # the proxy itself is not on the list
        ("2001:db8:1::5", {}, True),
        ("10.0.0.2", {"X-Forwarded-For": "2001:db8:1:ff::1"}, True),
        ("2001:db8:2::5", {}, False),
    ]
    async with app.router.lifespan_context(app):
        for peer, headers, allowed in cases:
            async with client(app, peer) as http:
                response = await http.post("/v1/chat/completions", json=body, headers=headers)
                health = await http.get("/health")
            assert health.status_code == 200
            if allowed:
                assert response.status_code != 403, (peer, headers)
            else:
                assert_openai_error(response, 403, "ip_not_allowed")


@pytest.fixture
async def governed(store: Store) -> AsyncIterator[object]:
    settings = Settings(gateway=GatewayConfig(controller="http://127.0.0.1:9"), auth=AuthConfig(enabled=True))
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        yield app


async def test_tenant_and_key_allow_lists(governed: object, store: Store) -> None:
    tenants.create_tenant(store, "t", TenantSettings(ip_allowlist=["192.0.2.0/24", "2001:db8::/32"]))
    anywhere = keys.create_key(store, KeySettings(tenant="t")).key
    narrow = keys.create_key(store, KeySettings(tenant="t", ip_allowlist=["192.0.2.128/25"])).key
    body = {"model": "m", **CHAT}
    for peer, key, allowed in [
        ("192.0.2.1", anywhere, True),
        ("2001:db8::1", anywhere, True),
        ("203.0.113.1", anywhere, False),
        ("192.0.2.1", narrow, False),
        ("192.0.2.200", narrow, True),
    ]:
        async with client(governed, peer) as http:
            response = await http.post("/v1/chat/completions", json=body, headers=bearer(key))
        if allowed:
            assert response.status_code not in (401, 403), (peer, response.text)
        else:
            assert_openai_error(response, 403, "ip_not_allowed")


async def test_rate_limited_key_gets_429_with_retry_after(governed: object, store: Store) -> None:
    key = keys.create_key(store, KeySettings(tenant="t", rpm=2)).key
    async with client(governed, "127.0.0.1") as http:
        statuses = []
        for _ in range(3):
            response = await http.post("/v1/chat/completions", json={"model": "m", **CHAT}, headers=bearer(key))
            statuses.append(response.status_code)
    assert 429 not in statuses[:2] and statuses[2] == 429
    assert_openai_error(response, 429, "rate_limit_exceeded")
    assert 55 <= int(response.headers["retry-after"]) <= 60
