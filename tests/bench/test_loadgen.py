"""The load generator against an in-process fake server (httpx.MockTransport): SSE parsing and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tokenyard.bench.loadgen import (
    BenchError,
    BenchSettings,
    list_models,
    normalise_base_url,
    request_body,
    run_level,
    send_request,
)
from tokenyard.bench.report import render_table, report_dict

BASE = "http://fake/v1"
SETTINGS = BenchSettings(base_url=BASE, model="m", prompts=("hi", "there"), max_tokens=3, ignore_eos=True)


def sse(*events: dict[str, Any] | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}}
GOOD_STREAM = sse(delta(""), delta("a"), delta("b"), delta("c"), delta("", "length"), USAGE, "[DONE]")


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def send(body: bytes, status: int = 200) -> Any:
    async with client_for(lambda request: httpx.Response(status, content=body)) as client:
        return await send_request(client, SETTINGS, "hi")


async def test_stream_with_usage_counts_usage_tokens_and_text_chunks() -> None:
    result = await send(GOOD_STREAM)
    assert result.ok
    assert len(result.chunk_times) == 3  # the empty role chunk is not a token
    assert (result.usage_completion_tokens, result.usage_prompt_tokens) == (3, 4)
    assert result.start <= result.chunk_times[0] <= result.end


async def test_stream_without_usage_falls_back_to_chunks() -> None:
    result = await send(sse(delta("a"), delta("b", "stop"), "[DONE]"))
    assert result.ok
    assert result.usage_completion_tokens is None
    assert result.output_tokens == 2


async def test_http_error_keeps_the_openai_message() -> None:
    body = json.dumps({"error": {"message": "model 'x' not found", "type": "invalid_request_error"}}).encode()
    result = await send(body, status=404)
    assert result.error == "HTTP 404: model 'x' not found"


async def test_error_event_inside_a_stream_fails_the_request() -> None:
    result = await send(sse(delta("a"), {"error": {"message": "worker died"}}, "[DONE]"))
    assert result.error == "stream error: worker died"


async def test_stream_cut_short_is_an_error() -> None:
    result = await send(sse(delta("a")))
    assert result.error is not None
    assert "ended" in result.error


@pytest.mark.parametrize("line", [b"data: {not json\n\n", b"data: [1, 2]\n\n"])
async def test_malformed_event_is_an_error_not_a_crash(line: bytes) -> None:
    result = await send(line)
    assert result.error is not None
    assert result.error.startswith("malformed stream")


async def test_run_level_sends_exactly_the_requested_count_with_bounded_concurrency() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["messages"][0]["content"])
        return httpx.Response(200, content=GOOD_STREAM)

    async with client_for(handler) as client:
        summary = await run_level(client, SETTINGS, concurrency=2, num_requests=5)
    assert (summary.requests, summary.errors, summary.output_tokens) == (5, 0, 15)
    assert seen == ["hi", "there", "hi", "there", "hi"]  # prompts cycle in order
    report = report_dict(SETTINGS, [summary])
    assert report["levels"][0]["token_count_source"] == "usage"
    assert "CONC" in render_table(SETTINGS, [summary])


async def test_list_models_turns_a_refused_connection_into_a_bench_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client_for(refuse) as client:
        with pytest.raises(BenchError, match="cannot reach"):
            await list_models(client, BASE)


def test_request_body_asks_for_usage_and_ignore_eos() -> None:
    body = request_body(SETTINGS, "hi")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    completions = request_body(BenchSettings(base_url=BASE, model="m", chat=False), "hi")
    assert completions["prompt"] == "hi"
    assert "ignore_eos" not in completions


@pytest.mark.parametrize("url", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"])
def test_base_url_always_ends_in_v1(url: str) -> None:
    assert normalise_base_url(url) == "http://h:1/v1"


def test_base_url_needs_a_scheme() -> None:
    with pytest.raises(ValueError, match="http://"):
        normalise_base_url("localhost:8000")
