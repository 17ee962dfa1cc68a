"""Log lines: JSON off a terminal with the request's fields, readable on one; the id forwarded inside."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import pytest
from fastapi import FastAPI, Request

from tokenyard.gateway.request_id import RequestIdMiddleware
from tokenyard.observability.logs import LogContextMiddleware, forward_request_id, log_outcome, setup_logging
from tokenyard.observability.settings import LoggingConfig
from tokenyard.protocol.outcome import RequestOutcome


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()  # not a terminal: JSON
    setup_logging("gateway", LoggingConfig(), stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_off_a_terminal(captured: io.StringIO) -> None:
    logging.getLogger("tokenyard.test").warning("模型 %s 已加载", "小")
    (line,) = _lines(captured)
    assert line["message"] == "模型 小 已加载" and line["level"] == "warning"
    assert line["service"] == "gateway" and line["logger"] == "tokenyard.test"
    datetime.fromisoformat(str(line["time"]))


def test_text_lines_when_asked() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("worker", LoggingConfig(format="text"), stream)
        logging.getLogger("tokenyard.test").info("hello", extra={"latency_ms": 12.5})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert stream.getvalue().rstrip().endswith("worker INFO tokenyard.test: hello [latency_ms=12.5]")


async def test_request_id_reaches_log_lines_and_internal_calls(captured: io.StringIO) -> None:
    forwarded: list[str | None] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        forwarded.append(request.headers.get("x-request-id"))
        return httpx.Response(200)

    app = FastAPI()

    @app.get("/work")
    async def work(request: Request) -> dict[str, str]:
        logging.getLogger("tokenyard.test").info("working")
        hooks = {"request": [forward_request_id]}
        async with httpx.AsyncClient(transport=httpx.MockTransport(upstream), event_hooks=hooks) as client:
            await client.get("http://worker/generate")
        return {"ok": "yes"}

    app.add_middleware(LogContextMiddleware)
    app.add_middleware(RequestIdMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        response = await client.get("/work", headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert forwarded == ["req-42"]
    working = next(line for line in _lines(captured) if line["message"] == "working")
    assert working["request_id"] == "req-42"


def test_one_access_line_per_outcome(captured: io.StringIO) -> None:
    outcome = RequestOutcome(
        record_id="r",
        request_id="req-7",
        method="POST",
        endpoint="/v1/chat/completions",
        started_at=datetime.now(timezone.utc),
        tenant="租户",
        model="m",
        worker="worker-1",
        status=502,
        latency_s=0.25,
    )
    log_outcome(outcome)
    (line,) = _lines(captured)
    assert line["message"] == "POST /v1/chat/completions 502 in 250 ms" and line["level"] == "warning"
    assert (line["request_id"], line["tenant"], line["worker"], line["latency_ms"]) == (
        "req-7",
        "租户",
        "worker-1",
        250.0,
    )
