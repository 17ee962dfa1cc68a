"""The per-request record: finished exactly once, before the last bytes leave, also when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tokenyard.gateway.outcome import OutcomeListeners, OutcomeMiddleware, RequestOutcome, tracker_of
from tokenyard.protocol.internal import GenerateChunk
from tokenyard.web import ClosingStreamingResponse


def make_app(events: list[str], outcomes: list[RequestOutcome]) -> FastAPI:
    app = FastAPI()
    listeners = OutcomeListeners()

    async def remember(outcome: RequestOutcome) -> None:
        await asyncio.sleep(0)
        events.append("finished")
        outcomes.append(outcome)

    def broken(_outcome: RequestOutcome) -> None:
        raise RuntimeError("a failing listener must not stop the others")

    listeners.add(broken)
    listeners.add(remember)

    @app.post("/v1/json")
    async def answer(request: Request) -> JSONResponse:
        tracker = tracker_of(request.state)
        tracker.model = "m"
        tracker.set_usage(7, 3, 2)
        tracker.delivered_all()
        request.state.filter_actions = [{"action": "mask", "rule": "r1"}]
        return JSONResponse({"ok": True})

    @app.post("/v1/stream")
    async def stream(request: Request) -> ClosingStreamingResponse:
        tracker = tracker_of(request.state)

        async def chunks() -> AsyncIterator[str]:
            for n in range(1, 1000):
                tracker.on_chunk(0, GenerateChunk(text="x", num_new_tokens=1, completion_tokens=n), "w1")
                yield f"data: {n}\n\n"
                tracker.on_delivered(0, n)
                await asyncio.sleep(0.001)

        return ClosingStreamingResponse(chunks(), media_type="text/event-stream")

    @app.post("/v1/boom")
    async def boom() -> None:
        raise ValueError("unexpected")

    app.add_middleware(OutcomeMiddleware, listeners=lambda: listeners)
    return app


async def call(app: FastAPI, path: str, events: list[str], disconnect_after: int | None = None) -> None:
    """Drive the ASGI app by hand, so the client can leave after `disconnect_after` body messages."""
    gone = asyncio.Event()
    bodies = 0
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [], "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
        "root_path": "", "app": app,
    }  # fmt: skip
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            events.append("last bytes" if not message.get("more_body") else "bytes")
            if disconnect_after is not None and bodies >= disconnect_after:
                gone.set()

    with contextlib.suppress(ValueError):  # /v1/boom's error, re-raised after the 500 is sent
        await app(scope, receive, send)


async def test_a_whole_answer_is_recorded_once_before_its_last_bytes_are_sent() -> None:
    events: list[str] = []
    outcomes: list[RequestOutcome] = []
    await call(make_app(events, outcomes), "/v1/json", events)
    assert events == ["finished", "last bytes"]
    [outcome] = outcomes
    assert (outcome.status, outcome.model, outcome.endpoint) == (200, "m", "/v1/json")
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens) == (7, 3, 2)
    assert outcome.delivered_tokens == 3 and not outcome.client_disconnected
    assert outcome.filter_actions == [{"action": "mask", "rule": "r1"}]
    assert outcome.request_id.startswith("req-")


async def test_a_client_that_leaves_mid_stream_is_recorded_once_with_what_it_received() -> None:
    events: list[str] = []
    outcomes: list[RequestOutcome] = []
    await call(make_app(events, outcomes), "/v1/stream", events, disconnect_after=5)
    await asyncio.sleep(0.05)
    assert events.count("finished") == 1
    [outcome] = outcomes
    assert outcome.status == 499 and outcome.client_disconnected
    assert outcome.worker == "w1" and outcome.ttft_s is not None
    assert 5 <= outcome.delivered_tokens < 999
    assert outcome.generated_tokens >= outcome.delivered_tokens


async def test_an_unexpected_error_is_recorded_once_as_a_500() -> None:
    events: list[str] = []
    outcomes: list[RequestOutcome] = []
    await call(make_app(events, outcomes), "/v1/boom", events)
    assert [o.status for o in outcomes] == [500]
