"""Tokens per minute are corrected to what the engine did when the request's record is finished,
also when the client leaves mid-answer (the reservation would otherwise hold for a whole minute)."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.gateway.outcome import OutcomeMiddleware, tracker_of
from tokenyard.gateway.ratelimit import RateLimitMiddleware
from tokenyard.governance.principal import Limits, Principal
from tokenyard.governance.ratelimit import MemoryLimiter
from tokenyard.protocol.internal import GenerateChunk

PRINCIPAL = Principal(tenant="acme", key_prefix="ty-key1", key_limits=Limits(tpm=1000))


class ClientGone(OSError):
    """What the server sees when the client closed the connection mid-answer."""


async def engine_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Counts 7 prompt tokens and 3 generated ones, then either answers or loses its client."""
    tracker = tracker_of(type("State", (), scope["state"])())
    tracker.model = "tiny"
    tracker.set_usage(prompt_tokens=7, completion_tokens=0, cached_tokens=0)
    tracker.on_chunk(0, GenerateChunk(text="abc", num_new_tokens=3, completion_tokens=3), "worker-1")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    if scope["path"].endswith("leave"):
        raise ClientGone("the client closed the connection")
    await send({"type": "http.response.body", "body": b"abc"})


def with_principal(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["principal"] = PRINCIPAL
        await app(scope, receive, send)

    return wrapped


def gateway(limiter: MemoryLimiter) -> ASGIApp:
    limited = RateLimitMiddleware(engine_app, limiter=lambda: limiter)
    return with_principal(OutcomeMiddleware(limited, listeners=lambda: None))


async def test_a_client_that_leaves_gives_back_the_unused_tokens() -> None:
    limiter = MemoryLimiter(hold=60)
    transport = httpx.ASGITransport(app=gateway(limiter))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900}
        with pytest.raises(ClientGone):
            await client.post("/v1/chat/completions/leave", json=body)
        # ~919 tokens were reserved and 10 used: without the correction a second call of the same
        # size (919 + 919 > 1,000) would be refused for the rest of the minute.
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200  # 10 + 10 + 919
        # What was used still counts: 20 used + ~994 reserved passes 1,000.
        refused = await client.post("/v1/chat/completions", json=body | {"max_tokens": 975})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
