"""CompletionServing over fake workers: several prompts, best_of, echo and max_tokens 0, whole or streamed."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from tests.gateway.fakes import FakeWorker, client_request, service, sse_events
from tokenyard.gateway.filtering import ContentScreen
from tokenyard.gateway.serving_completion import CompletionServing
from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.openai import CompletionRequest


def serving(*workers: FakeWorker) -> CompletionServing:
    return CompletionServing(service(*workers), ContentScreen(None))


async def answer(*workers: FakeWorker, **fields: object) -> dict[str, Any]:
    body = CompletionRequest.model_validate({"model": "m", **fields})
    response = await serving(*workers).create(body, client_request("/v1/completions"))
    assert isinstance(response, JSONResponse)
    return json.loads(bytes(response.body))


async def stream(*workers: FakeWorker, **fields: object) -> list[Any]:
    body = CompletionRequest.model_validate({"model": "m", "stream": True, **fields})
    response = await serving(*workers).create(body, client_request("/v1/completions"))
    assert isinstance(response, StreamingResponse)
    return sse_events([part async for part in response.body_iterator])


def by_request(request: GenerateRequest) -> list[str]:
    """cmpl-<id>-<prompt>-<candidate> answers "<prompt>.<candidate>" then a piece as long as the candidate number."""
    prompt, candidate = request.request_id.split("-")[-2:]
    return [f"{prompt}.{candidate}", "x" * (int(candidate) + 1)]


def texts(events: list[Any]) -> dict[int, str]:
    joined: dict[int, str] = {}
    for event in events[:-1]:
        for choice in event["choices"]:
            joined[choice["index"]] = joined.get(choice["index"], "") + choice["text"]
    return joined


async def test_each_prompt_gets_its_n_choices_and_is_counted_once() -> None:
    body = await answer(FakeWorker("w0", answer=by_request), prompt=["a", "b"], n=2)
    assert [c["text"] for c in body["choices"]] == ["0.0x", "0.1xx", "1.0x", "1.1xx"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (8, 8)


async def test_best_of_returns_the_likeliest_candidates_and_counts_them_all() -> None:
    body = await answer(FakeWorker("w0", answer=by_request), prompt="a", n=1, best_of=3)
    # Each token's logprob is minus its length: the shortest answer is the likeliest.
    assert [c["text"] for c in body["choices"]] == ["0.0x"] and body["choices"][0]["logprobs"] is None
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (4, 6)


async def test_echo_with_max_tokens_0_is_the_prompt_alone() -> None:
    body = await answer(FakeWorker("w0"), prompt="Say", echo=True, max_tokens=0)
    (choice,) = body["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("Say", "length")
    assert body["usage"]["completion_tokens"] == 0


async def test_the_finish_reason_reaches_the_client() -> None:
    body = await answer(FakeWorker("w0", finish="length"), prompt="a", max_tokens=3)
    assert body["choices"][0]["finish_reason"] == "length"


async def test_a_stream_sends_text_then_usage_then_done() -> None:
    events = await stream(FakeWorker("w0"), prompt="Say", echo=True, stream_options={"include_usage": True})
    *chunks, last, done = events
    assert done == "[DONE]" and last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    assert texts([*chunks, done]) == {0: "SayHello!"}
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_a_streamed_max_tokens_0_sends_the_prompt_and_counts_nothing_generated() -> None:
    events = await stream(FakeWorker("w0", answer=lambda r: ["!"]), prompt="Say", echo=True, max_tokens=0,
                          stream_options={"include_usage": True})  # fmt: skip
    chunk, usage, done = events
    assert chunk["choices"][0]["text"] == "Say" and chunk["choices"][0]["finish_reason"] == "length"
    assert usage["usage"]["completion_tokens"] == 0 and done == "[DONE]"


async def test_streamed_choices_of_several_prompts_keep_their_indexes() -> None:
    events = await stream(FakeWorker("w0", answer=by_request), prompt=["a", "b"])
    assert texts(events) == {0: "0.0x", 1: "1.0x"} and events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


async def test_a_stream_that_breaks_for_good_ends_with_an_error_event_then_done() -> None:
    events = await stream(FakeWorker("w0", break_after=1), prompt="a")
    assert events[0]["choices"][0]["text"] == "Hel"
    assert set(events[-2]) == {"error"} and events[-1] == "[DONE]"
