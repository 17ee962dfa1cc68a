"""ChatServing over fake workers: what the client receives, whole or streamed, for given worker chunks."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.types import Message

from tests.gateway.fakes import FakeWorker, FakeWorkers, client_request, service, sse_events
from tokenyard.errors import ClientClosedRequestError, WorkerError
from tokenyard.gateway.filtering import ContentScreen
from tokenyard.gateway.serving_chat import ChatServing
from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.openai import ChatCompletionRequest
from tokenyard.protocol.tool_calls import format_call

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


async def answer(*workers: FakeWorker, **fields: object) -> dict[str, Any]:
    response = await ChatServing(service(*workers), ContentScreen(None)).create(chat(**fields), client_request())
    assert isinstance(response, JSONResponse)
    return json.loads(bytes(response.body))


async def stream(*workers: FakeWorker, **fields: object) -> list[Any]:
    serving = ChatServing(service(*workers), ContentScreen(None))
    response = await serving.create(chat(stream=True, **fields), client_request())
    assert isinstance(response, StreamingResponse)
    return sse_events([part async for part in response.body_iterator])


def by_choice(request: GenerateRequest) -> list[str]:
    return ["choice ", request.request_id[-1]]


def content(events: list[Any], index: int) -> str:
    deltas = [c["delta"] for e in events if e != "[DONE]" for c in e.get("choices", []) if c["index"] == index]
    return "".join(d.get("content", "") for d in deltas)


def finish_reasons(events: list[Any]) -> dict[int, str]:
    choices = [c for e in events if e != "[DONE]" for c in e.get("choices", [])]
    return {c["index"]: c["finish_reason"] for c in choices if c["finish_reason"] is not None}


async def test_n_choices_are_answered_with_one_prompt_counted_once() -> None:
    body = await answer(FakeWorker("w0", answer=by_choice, cached_tokens=2), n=2)
    assert [c["message"]["content"] for c in body["choices"]] == ["choice 0", "choice 1"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "stop"]
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (4, 4, 8)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 2}


async def test_the_length_limit_reaches_the_client() -> None:
    body = await answer(FakeWorker("w0", finish="length"))
    assert body["choices"][0]["finish_reason"] == "length"


async def test_a_worker_lost_before_the_first_token_is_replaced() -> None:
    body = await answer(FakeWorker("w0", refuse=WorkerError("down")), FakeWorker("w1"))
    assert body["choices"][0]["message"]["content"] == "Hello!"


async def test_tool_calls_come_back_as_calls_with_their_finish_reason() -> None:
    call = format_call("get_weather", '{"city": "Paris"}')
    body = await answer(FakeWorker("w0", answer=lambda r: [call]), tools=TOOLS, tool_choice="required")
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


async def test_a_stream_opens_with_roles_then_deltas_finish_usage_and_done() -> None:
    events = await stream(FakeWorker("w0", answer=by_choice), n=2, stream_options={"include_usage": True})
    assert [e["choices"][0]["delta"] for e in events[:2]] == [{"role": "assistant", "content": ""}] * 2
    assert (content(events, 0), content(events, 1)) == ("choice 0", "choice 1")
    assert finish_reasons(events) == {0: "stop", 1: "stop"}
    *chunks, last, done = events
    assert done == "[DONE]" and last["choices"] == []
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (4, 4)
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_without_include_usage_chunks_have_no_usage_key() -> None:
    events = await stream(FakeWorker("w0"))
    assert events[-1] == "[DONE]" and all("usage" not in e for e in events[:-1])
    assert content(events, 0) == "Hello!" and finish_reasons(events) == {0: "stop"}


async def test_a_stream_broken_mid_way_continues_from_another_worker() -> None:
    events = await stream(FakeWorker("w0", break_after=1), FakeWorker("w1"))
    assert content(events, 0) == "Hello!" and finish_reasons(events) == {0: "stop"}


async def test_a_stream_that_cannot_be_resumed_ends_with_an_error_event_then_done() -> None:
    events = await stream(FakeWorker("w0", break_after=1), stream_options={"include_usage": True})
    assert content(events, 0) == "Hel"
    *_, error, done = events
    assert done == "[DONE]" and set(error) == {"error"} and error["error"]["message"]
    assert not any(e != "[DONE]" and "usage" in e and e["usage"] for e in events)  # no usage after an error


async def test_a_streamed_tool_call_finishes_with_tool_calls() -> None:
    call = format_call("get_weather", "{}")
    events = await stream(FakeWorker("w0", answer=lambda r: [call[:10], call[10:]]), tools=TOOLS)
    calls = [t for e in events[:-1] for c in e.get("choices", []) for t in c["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert finish_reasons(events) == {0: "tool_calls"}


async def test_a_client_leaving_a_whole_answer_aborts_its_generation_at_once() -> None:
    # A long generation (5,000 tokens at ~1 ms) that the client leaves 50 ms in.
    long = FakeWorker("w0", answer=lambda request: ["x"] * 5000, delay=0.001)
    generation = service(long)

    async def receive() -> Message:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    leaving = Request(
        {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "state": {}}, receive
    )
    started = time.monotonic()
    with pytest.raises(ClientClosedRequestError):
        await ChatServing(generation, ContentScreen(None)).create(chat(max_tokens=5000), leaving)
    assert time.monotonic() - started < 3.0  # the whole answer takes 5 s or more
    workers = generation.workers
    assert isinstance(workers, FakeWorkers)
    assert workers.streams[0].closed
    await asyncio.sleep(0)  # the abort is sent in the background
    assert workers.aborted == [(workers.streams[0].address, workers.streams[0].request.request_id)]
