"""POST /v1/completions: one or more prompts (text or token ids) in, text completions out.

Besides OpenAI's sampling fields: `echo` (the prompt's text first, and with `logprobs` its tokens'
logprobs, the first one null), legacy `logprobs` (0..5), `best_of` (candidates generated per prompt,
the n with the highest summed logprob returned; usage counts them all) and `max_tokens` 0 with echo.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tokenyard.gateway.choices import ChoiceResult, track_answer, usage_of
from tokenyard.gateway.filtering import ContentScreen
from tokenyard.gateway.generation import GenerationService
from tokenyard.gateway.logprobs import TextOffsets, completion_logprobs
from tokenyard.gateway.outcome import tracker_of
from tokenyard.gateway.principal import tenant_of
from tokenyard.gateway.request_mapping import (
    candidates_per_prompt,
    completion_requests,
    new_request_id,
    refuse_unsupported,
    split_prompts,
)
from tokenyard.gateway.streaming import cancel_on_disconnect, sse, sse_answer, stream_chunk
from tokenyard.protocol.internal import GenerateChunk
from tokenyard.protocol.openai import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from tokenyard.web import ClosingStreamingResponse

Chunks = AsyncGenerator[tuple[int, GenerateChunk], None]


def best_candidates(results: list[ChoiceResult], candidates: int, n: int) -> list[ChoiceResult]:
    """Per prompt, the n candidates with the highest cumulative logprob (OpenAI's best_of), best first."""
    if candidates == n:
        return results
    chosen = []
    for start in range(0, len(results), candidates):
        group = results[start : start + candidates]
        chosen += sorted(group, key=lambda result: result.cumulative_logprob, reverse=True)[:n]
    return chosen


def prompt_only(chunk: GenerateChunk) -> GenerateChunk:
    """max_tokens 0: the prompt's echo (and its logprobs) without the one token generated."""
    finish = "length" if chunk.finish_reason is not None else None
    return chunk.model_copy(update={"text": "", "logprobs": [], "completion_tokens": 0, "finish_reason": finish})


class ChoiceText:
    """One choice's text and legacy logprobs, chunk by chunk: with `echo`, the prompt comes first and
    the prompt's tokens head the logprobs; text offsets continue across chunks."""

    def __init__(self, body: CompletionRequest) -> None:
        self._echo, self._logprobs = body.echo, body.logprobs is not None
        self._offsets: TextOffsets | None = None  # set by the first chunk

    def piece(self, chunk: GenerateChunk) -> tuple[str, CompletionLogprobs | None]:
        text, logprobs = chunk.text, CompletionLogprobs()
        if self._offsets is None:
            prompt_text = (chunk.prompt_text or "") if self._echo else ""
            text = prompt_text + text
            if self._echo:
                completion_logprobs(chunk.prompt_logprobs or [], TextOffsets(), into=logprobs)
            self._offsets = TextOffsets(len(prompt_text))
        completion_logprobs(chunk.logprobs or [], self._offsets, into=logprobs)
        return text, logprobs if self._logprobs else None


class CompletionServing:
    """Text completions over the generation service; the content screen refuses and filters words."""

    def __init__(self, service: GenerationService, screen: ContentScreen) -> None:
        self.service = service
        self.screen = screen

    async def create(self, body: CompletionRequest, raw: Request) -> JSONResponse | StreamingResponse:
        refuse_unsupported(body)
        candidates = candidates_per_prompt(body)
        completion_id = new_request_id("cmpl")
        prompts = split_prompts(body.prompt)
        guard = self.screen.completion(body, raw)  # a listed word in a prompt: refused here
        requests = completion_requests(body, prompts, completion_id, candidates, tenant_of(raw.state))
        tracker = tracker_of(raw.state)
        tracker.begin(body.model, body, stream=body.stream)
        if body.stream:
            streams = await self.service.open(body.model, requests)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = self.service.merged(streams, guard)
            events = sse_answer(
                _prompts_only(chunks) if body.max_tokens == 0 else chunks,
                streams,
                CompletionEvents(body, completion_id, len(streams), include_usage),
                choices_per_prompt=body.n,  # best_of above n is refused for streams
                include_usage=include_usage,
                tracker=tracker,
            )
            return ClosingStreamingResponse(events, media_type="text/event-stream")
        # Watching for the client from the start: it may leave while the first token is awaited.
        results = await cancel_on_disconnect(raw, self.service.run(body.model, requests, tracker, guard))
        if body.max_tokens == 0:
            results = [_whole(prompt_only(_as_chunk(r))) for r in results]
        usage = usage_of(results, candidates)
        track_answer(tracker, results, usage, whole=True)
        response = CompletionResponse(
            id=completion_id,
            model=body.model,
            choices=[self._choice(i, r, body) for i, r in enumerate(best_candidates(results, candidates, body.n))],
            usage=usage,
        )
        return JSONResponse(response.model_dump())

    @staticmethod
    def _choice(index: int, result: ChoiceResult, body: CompletionRequest) -> CompletionChoice:
        text, logprobs = ChoiceText(body).piece(_as_chunk(result))
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=result.finish_reason)


class CompletionEvents:
    """A text completion stream's events: one per chunk that adds text, logprobs or the finish reason."""

    def __init__(self, body: CompletionRequest, completion_id: str, num_choices: int, include_usage: bool) -> None:
        self._model, self._id, self._include_usage = body.model, completion_id, include_usage
        self._texts = [ChoiceText(body) for _ in range(num_choices)]

    def opening(self) -> list[str]:
        return []

    def events(self, index: int, chunk: GenerateChunk) -> tuple[list[str], str]:
        text, logprobs = self._texts[index].piece(chunk)
        if not (text or chunk.finish_reason is not None or (logprobs and logprobs.tokens)):
            return [], text
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=chunk.finish_reason)
        data = stream_chunk(CompletionResponse(id=self._id, model=self._model, choices=[choice]), self._include_usage)
        return [sse(data)], text

    def usage(self, usage: Usage) -> str:
        return sse(CompletionResponse(id=self._id, model=self._model, choices=[], usage=usage).model_dump())


async def _prompts_only(chunks: Chunks) -> Chunks:
    """max_tokens 0: every chunk as `prompt_only`, counted so (no completion tokens)."""
    async with aclosing(chunks) as inner:
        async for index, chunk in inner:
            yield index, prompt_only(chunk)


def _as_chunk(result: ChoiceResult) -> GenerateChunk:
    """A whole choice as one chunk, so non-streamed answers are built as streamed ones are."""
    return GenerateChunk(
        text=result.text,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_tokens or 0,
        finish_reason=result.finish_reason,
        logprobs=result.logprobs,
        prompt_logprobs=result.prompt_logprobs,
        prompt_text=result.prompt_text,
    )


def _whole(chunk: GenerateChunk) -> ChoiceResult:
    result = ChoiceResult()
    result.add(chunk)
    return result
