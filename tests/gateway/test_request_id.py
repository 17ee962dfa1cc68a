"""X-Request-ID: the client's when it is acceptable, a fresh one otherwise, on every response."""

from __future__ import annotations

import httpx
import pytest

from tokenyard.config import GatewayConfig, Settings
from tokenyard.gateway.app import create_app
from tokenyard.gateway.request_id import MAX_LENGTH, accept_request_id


def client() -> httpx.AsyncClient:
    app = create_app(Settings(gateway=GatewayConfig(controller="http://127.0.0.1:9")))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


def test_acceptable_ids_are_kept() -> None:
    assert accept_request_id("abc-123_XYZ.7") == "abc-123_XYZ.7"


@pytest.mark.parametrize("bad", ["", "x" * (MAX_LENGTH + 1), "a b", "a\r\nSet-Cookie: x", "请求", "a\x00b"])
def test_unacceptable_ids_are_replaced(bad: str) -> None:
    fresh = accept_request_id(bad)
    assert fresh != bad
    assert len(fresh) == 32 and fresh.isalnum()


async def test_every_response_carries_one() -> None:
    async with client() as http:
        ok = await http.get("/health", headers={"X-Request-ID": "mine-1"})
        missing = await http.get("/v1/nothing")
        invalid = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert ok.headers["x-request-id"] == "mine-1"
    assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 32
    assert invalid.status_code == 400 and invalid.headers["x-request-id"] != missing.headers["x-request-id"]
