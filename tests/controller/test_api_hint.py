"""The controller's answer to OpenAI requests sent to its port: an OpenAI error naming the gateways."""

from __future__ import annotations

import httpx
import openai
import pytest
from fastapi import FastAPI

from tokenyard.config import ControllerConfig
from tokenyard.controller.api_hint import SEEN_SECONDS, GatewaySightings
from tokenyard.controller.app import create_app
from tokenyard.web import CLUSTER_TOKEN_HEADER, GATEWAY_HEADER

from .conftest import FakeClock

TOKEN = "s3cret"


@pytest.fixture
def app(clock: FakeClock) -> FastAPI:
    return create_app(ControllerConfig(startup_grace=0), TOKEN, clock=clock)


def _client(app: FastAPI, peer: str = "10.0.0.7", headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://controller", headers=headers or {})


async def test_v1_path_without_token_gets_openai_error_naming_default_gateway_port(app: FastAPI) -> None:
    async with _client(app) as client:
        response = await client.post("/v1/chat/completions", json={"model": "x", "messages": []})
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "wrong_service"
    assert "controller" in error["message"] and "port 8000" in error["message"]


async def test_hint_names_gateways_seen_on_authenticated_calls(app: FastAPI, clock: FakeClock) -> None:
    # A gateway listening on 0.0.0.0 is named by the address its call came from.
    gateway_headers = {CLUSTER_TOKEN_HEADER: TOKEN, GATEWAY_HEADER: "http://0.0.0.0:8000"}
    async with _client(app, peer="10.1.2.3", headers=gateway_headers) as gateway:
        assert (await gateway.get("/models")).status_code == 200
    # Without the token the announcement is refused with the call, and not remembered.
    async with _client(app, peer="10.6.6.6", headers={GATEWAY_HEADER: "http://evil:1"}) as stranger:
        assert (await stranger.get("/models")).status_code == 403
    async with _client(app) as client:
        message = (await client.get("/v1/models")).json()["error"]["message"]
        assert "http://10.1.2.3:8000/v1/models" in message and "evil" not in message
        clock.advance(SEEN_SECONDS + 1)
        assert "10.1.2.3" not in (await client.get("/v1/models")).json()["error"]["message"]


async def test_official_client_raises_not_found_with_the_hint(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    http_client = httpx.AsyncClient(transport=transport)
    async with openai.AsyncOpenAI(
        base_url="http://controller/v1", api_key="x", http_client=http_client, max_retries=0
    ) as client:
        with pytest.raises(openai.NotFoundError, match="tokenyard controller"):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "你好"}])


def test_sightings_are_bounded_and_keep_explicit_hosts() -> None:
    sightings = GatewaySightings(clock=lambda: 0.0)
    sightings.saw("http://gw.example:9000", "10.0.0.1")
    sightings.saw("not a url", "10.0.0.1")
    sightings.saw("http://[::]:8000", "fd00::5")
    assert sightings.recent() == ["http://[fd00::5]:8000", "http://gw.example:9000"]
    for i in range(40):
        sightings.saw(f"http://10.9.0.{i}:8000", None)
    assert len(sightings.recent()) <= 16
