"""Event streams leave every service marked unbuffered, so nginx passes each event on at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from tokenyard.web import ClosingStreamingResponse


async def _events() -> AsyncIterator[str]:
    yield "data: 你好\n\n"
    yield "data: [DONE]\n\n"


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/sse")
    async def sse() -> ClosingStreamingResponse:
        return ClosingStreamingResponse(_events(), media_type="text/event-stream")

    @app.get("/text")
    async def text() -> ClosingStreamingResponse:
        return ClosingStreamingResponse(_events(), media_type="text/plain")

    return app


async def test_event_stream_says_do_not_buffer() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        sse = await client.get("/sse")
        text = await client.get("/text")
    assert sse.headers["x-accel-buffering"] == "no"
    assert sse.headers["cache-control"] == "no-cache"
    assert sse.text == "data: 你好\n\ndata: [DONE]\n\n"
    assert "x-accel-buffering" not in text.headers
