"""POST /v1/completions: one or more prompts (text or token ids) in, text completions out.

Besides OpenAI's sampling fields: `echo` (the prompt's text first, and with `logprobs` its tokens'
logprobs, the first one null), legacy `logprobs` (0..5), `best_of` (candidates generated per prompt,
the n with the highest summed logprob returned; usage counts them all) and `max_tokens` 0 with echo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.filtering import ContentScreen, OutputGuard
from tokenyard.gateway.generation import (
    ChoiceResult,
    GenerationService,
    ResumingStream,
    new_request_id,
    refuse_unsupported,
    sampling_options,
    track_answer,
    usage_of,
)
from tokenyard.gateway.logprobs import TextOffsets, completion_logprobs
from tokenyard.gateway.outcome import RequestTracker, tracker_of
from tokenyard.gateway.principal import tenant_of
from tokenyard.gateway.streaming import SSE_DONE, cancel_on_disconnect, sse, sse_error
from tokenyard.protocol.internal import GenerateChunk, GenerateRequest, SamplingOptions
from tokenyard.protocol.openai import CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse
from tokenyard.web import ClosingStreamingResponse

Prompt = str | list[int]


def split_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    """OpenAI's four prompt forms as a list of single prompts (text or token ids)."""
    if isinstance(prompt, str):
        prompts: list[Prompt] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]  # type: ignore[arg-type]
    else:
        prompts = list(prompt)  # type: ignore[arg-type]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise InvalidRequestError("The prompt must not be empty.", param="prompt")
    return prompts


def candidates_per_prompt(body: CompletionRequest) -> int:
    """How many completions to generate per prompt: `best_of` (at least `n`), else `n`."""
    if body.max_tokens == 0 and not body.echo:
        raise InvalidRequestError(
            "max_tokens must be at least 1; 0 is allowed only with echo (the prompt alone).", param="max_tokens"
        )
    best_of = body.best_of if body.best_of is not None else body.n
    if best_of < body.n:
        raise InvalidRequestError(f"best_of ({best_of}) must be at least n ({body.n}).", param="best_of")
    if best_of > body.n and body.stream:
        raise InvalidRequestError("best_of greater than n cannot be streamed; set stream to false.", param="best_of")
    return best_of


def completion_sampling(body: CompletionRequest, candidate: int, *, ranked: bool) -> SamplingOptions:
    """The worker's options; ranking best_of candidates needs their logprobs even if the client's do not."""
    logprobs = body.logprobs if body.logprobs is not None else (0 if ranked else None)
    # max_tokens 0 (with echo): generate one token and drop it, since the engine always samples one.
    options = sampling_options(body, 1 if body.max_tokens == 0 else body.max_tokens, candidate, logprobs=logprobs)
    if body.echo and body.logprobs is not None:
        options.prompt_logprobs = body.logprobs
    return options


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
    def __init__(self, service: GenerationService, screen: ContentScreen) -> None:
        self.service = service
        self.screen = screen

    async def create(self, body: CompletionRequest, raw: Request) -> JSONResponse | StreamingResponse:
        refuse_unsupported(body)
        candidates = candidates_per_prompt(body)
        completion_id = new_request_id("cmpl")
        prompts = split_prompts(body.prompt)
        guard = self.screen.completion(body, raw)  # a listed word in a prompt: refused here
        requests = [
            GenerateRequest(
                request_id=f"{completion_id}-{p}-{c}",
                model=body.model,
                prompt=prompt if isinstance(prompt, str) else None,
                prompt_token_ids=prompt if isinstance(prompt, list) else None,
                sampling=completion_sampling(body, c, ranked=candidates > body.n),
                echo=body.echo,
                tenant=tenant_of(raw.state),
            )
            for p, prompt in enumerate(prompts)
            for c in range(candidates)
        ]
        tracker = tracker_of(raw.state)
        tracker.begin(body.model, body, stream=body.stream)
        if body.stream:
            streams = await self.service.open(body.model, requests)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return ClosingStreamingResponse(
                self._stream(body, completion_id, streams, include_usage, tracker, guard),
                media_type="text/event-stream",
            )
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
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=result.finish_reason)  # type: ignore[arg-type]

    async def _stream(
        self,
        body: CompletionRequest,
        completion_id: str,
        streams: list[ResumingStream],
        include_usage: bool,
        tracker: RequestTracker | None = None,
        guard: OutputGuard | None = None,
    ) -> AsyncIterator[str]:
        def chunk(index: int, text: str, logprobs: CompletionLogprobs | None, finish_reason: str | None) -> str:
            choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish_reason)  # type: ignore[arg-type]
            data = CompletionResponse(id=completion_id, model=body.model, choices=[choice]).model_dump()
            if include_usage:
                data["usage"] = None
            else:
                data.pop("usage")
            return sse(data)

        counts = [ChoiceResult() for _ in streams]
        texts = [ChoiceText(body) for _ in streams]
        tracker = tracker or tracker_of(None)
        try:
            async with aclosing(self.service.merged(streams, guard)) as merged:
                async for index, part in merged:
                    part = prompt_only(part) if body.max_tokens == 0 else part
                    counts[index].count(part)
                    counts[index].finish_reason = part.finish_reason or counts[index].finish_reason
                    tracker.on_chunk(index, part, streams[index].worker_id)
                    text, logprobs = texts[index].piece(part)
                    if tracker.keep_content:
                        counts[index].text += text
                    if text or part.finish_reason is not None or (logprobs and logprobs.tokens):
                        yield chunk(index, text, logprobs, part.finish_reason)
                    tracker.on_delivered(index, counts[index].completion_tokens)
        except Exception as exc:
            yield sse_error(exc)
            yield SSE_DONE
            return
        finally:
            track_answer(tracker, counts, usage_of(counts, body.n), whole=False)
        if include_usage:
            final = CompletionResponse(id=completion_id, model=body.model, choices=[]).model_dump()
            final["usage"] = usage_of(counts, body.n).model_dump()
            yield sse(final)
        yield SSE_DONE


def _as_chunk(result: ChoiceResult) -> GenerateChunk:
    """A whole choice as one chunk, so non-streamed answers are built as streamed ones are."""
    return GenerateChunk(
        text=result.text,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_tokens or 0,
        finish_reason=result.finish_reason,  # type: ignore[arg-type]
        logprobs=result.logprobs,
        prompt_logprobs=result.prompt_logprobs,
        prompt_text=result.prompt_text,
    )


def _whole(chunk: GenerateChunk) -> ChoiceResult:
    result = ChoiceResult()
    result.add(chunk)
    return result
