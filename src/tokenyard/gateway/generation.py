"""What chat and text completions share: OpenAI fields to worker requests, fan-out, collection.

A request with `n` choices (or several prompts) becomes one worker request per choice, all sent
to the one worker that a single controller lookup picked.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tokenyard.errors import InvalidRequestError, WorkerError
from tokenyard.gateway.failover import with_failover
from tokenyard.gateway.outcome import RequestTracker
from tokenyard.gateway.router import Router
from tokenyard.gateway.streaming import merge_streams
from tokenyard.gateway.worker_client import GenerationStream, WorkerClient
from tokenyard.protocol.internal import (
    DispatchResponse,
    GenerateChunk,
    GenerateRequest,
    GuideSpec,
    ResumeState,
    SamplingOptions,
    TokenLogprobs,
)
from tokenyard.protocol.openai import SamplingFields, Usage, unsupported_fields

if TYPE_CHECKING:
    from tokenyard.gateway.filtering import OutputGuard

logger = logging.getLogger(__name__)


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


_WHY_UNSUPPORTED = {
    "suffix": "'suffix' needs a model trained for infill (fill-in-the-middle); the models served here are not.",
}


def refuse_unsupported(body: SamplingFields) -> None:
    """A 400 naming the first field tokenyard cannot honour yet, instead of ignoring it."""
    for name in unsupported_fields(body):
        message = _WHY_UNSUPPORTED.get(name, f"'{name}' is not supported by this server yet.")
        raise InvalidRequestError(message, param=name)


def sampling_options(
    body: SamplingFields,
    max_tokens: int | None,
    choice: int,
    *,
    logprobs: int | None = None,
    guide: GuideSpec | None = None,
) -> SamplingOptions:
    """OpenAI's fields with OpenAI's defaults; a seed is offset per choice so n>1 choices differ.

    `logprobs`: None, or how many alternatives to report with each generated token. `guide`: the
    constrained-decoding spec for response_format and tools (`gateway.structured`).
    """
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else 0
    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=top_k,
        seed=None if body.seed is None else body.seed + choice,
        stop=body.stop_list(),
        stop_token_ids=body.stop_token_ids or [],
        ignore_eos=body.ignore_eos,
        min_p=body.min_p or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        logit_bias=logit_bias(body.logit_bias),
        min_tokens=body.min_tokens or 0,
        logprobs=logprobs,
        guide=guide,
    )


def logit_bias(value: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's {"token id as a string": bias in [-100, 100]} as token ids."""
    biases: dict[int, float] = {}
    for key, bias in (value or {}).items():
        if not key.lstrip("-").isdigit():
            raise InvalidRequestError(f"Invalid key in 'logit_bias': {key!r} is not a token id.", param="logit_bias")
        if not -100 <= bias <= 100:
            raise InvalidRequestError(
                f"Invalid value in 'logit_bias' for token {key}: {bias} is outside [-100, 100].", param="logit_bias"
            )
        biases[int(key)] = bias
    return biases


@dataclass
class ChoiceResult:
    """One choice's stream summed up: its text (non-streamed answers only) and its usage."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # from the first chunk: a resumed stream's worker would count its own
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs] | None = None
    prompt_text: str | None = None
    worker: str | None = None  # the worker that produced it (the last one, if the stream was resumed)

    def count(self, chunk: GenerateChunk) -> None:
        """Usage only: what a stream keeps of each chunk."""
        self.prompt_tokens = chunk.prompt_tokens
        self.completion_tokens = chunk.completion_tokens
        if self.cached_tokens is None:
            self.cached_tokens = chunk.cached_tokens

    def add(self, chunk: GenerateChunk) -> None:
        """Everything: text, logprobs, the prompt's echo, usage."""
        self.count(chunk)
        self.text += chunk.text
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.logprobs += chunk.logprobs or []
        if self.prompt_text is None:
            self.prompt_text = chunk.prompt_text
        if self.prompt_logprobs is None:
            self.prompt_logprobs = chunk.prompt_logprobs

    @property
    def cumulative_logprob(self) -> float:
        """The sum of the tokens' logprobs: how best_of ranks candidates, as OpenAI does."""
        return sum(entry.logprob or 0.0 for entry in self.logprobs)


class GenerationService:
    """Dispatches a fan-out of worker requests and opens their streams, failing over if needed."""

    def __init__(self, router: Router, workers: WorkerClient, max_attempts: int, request_timeout: float) -> None:
        self.router = router
        self.workers = workers
        self.max_attempts = max_attempts
        self.request_timeout = request_timeout
        self._background: set[asyncio.Task[None]] = set()

    def abort_later(self, address: str, request_id: str) -> None:
        """Tell a worker to stop a generation nobody will read, without making the caller wait."""
        task = asyncio.create_task(self.workers.abort(address, request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def merged(
        self, streams: list[ResumingStream], guard: OutputGuard | None = None
    ) -> AsyncGenerator[tuple[int, GenerateChunk], None]:
        """The choices' chunks as they come, bounded by the request timeout, through the word filter's
        guard if there is one (it may stop a choice: its worker is then told to abort)."""
        chunks = merge_streams(streams, self.request_timeout)
        return chunks if guard is None else guard.filter(chunks, lambda index: streams[index].stop())

    async def open(self, model: str, requests: list[GenerateRequest]) -> list[ResumingStream]:
        """Open every choice's stream on one worker, trying another worker if that one fails."""
        opened = await with_failover(
            self.router,
            model,
            lambda target: self._open_on(target, requests),
            self.max_attempts,
            tenant=requests[0].tenant,
        )
        return [ResumingStream(self, model, request, stream) for request, stream in zip(requests, opened, strict=True)]

    async def reopen(self, model: str, request: GenerateRequest, exclude: list[str]) -> GenerationStream:
        """One request again, on a worker not in `exclude` (used to resume a broken stream)."""
        streams = await with_failover(
            self.router,
            model,
            lambda target: self._open_on(target, [request]),
            self.max_attempts,
            exclude,
            request.tenant,
        )
        return streams[0]

    async def _open_on(self, target: DispatchResponse, requests: list[GenerateRequest]) -> list[GenerationStream]:
        """Open every choice's stream, or none: an error closes those already open."""
        opened = await asyncio.gather(
            *(self.workers.open_generation(target, r) for r in requests), return_exceptions=True
        )
        failures = [o for o in opened if isinstance(o, BaseException)]
        streams = [o for o in opened if isinstance(o, GenerationStream)]
        if failures:
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
            raise failures[0]
        return streams

    async def run(
        self,
        model: str,
        requests: list[GenerateRequest],
        tracker: RequestTracker | None = None,
        guard: OutputGuard | None = None,
    ) -> list[ChoiceResult]:
        """Open the choices' streams and collect them whole (the non-streamed answer)."""
        return await self.collect(await self.open(model, requests), tracker, guard)

    async def collect(
        self, streams: list[ResumingStream], tracker: RequestTracker | None = None, guard: OutputGuard | None = None
    ) -> list[ChoiceResult]:
        results = [ChoiceResult() for _ in streams]
        async with aclosing(self.merged(streams, guard)) as merged:
            async for index, chunk in merged:
                results[index].add(chunk)
                results[index].worker = streams[index].worker_id
                if tracker is not None:
                    tracker.on_chunk(index, chunk, streams[index].worker_id)
        return results


def track_answer(tracker: RequestTracker, results: Sequence[ChoiceResult], usage: Usage, *, whole: bool) -> None:
    """The request's record: usage as the workers counted it, each choice's text and finish reason.

    `whole`: a non-streamed answer, handed over in one piece, so everything generated was delivered.
    """
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    tracker.set_usage(usage.prompt_tokens, usage.completion_tokens, cached)
    tracker.set_outputs([r.text for r in results], [r.finish_reason for r in results])
    if whole:
        tracker.delivered_all()


def usage_of(results: Sequence[ChoiceResult], choices_per_prompt: int) -> Usage:
    """OpenAI's usage: each prompt counted once, every generated token (all best_of candidates too).

    Results come grouped by prompt. A prompt's cached tokens are the fewest any of its choices
    reported: its choices share one prefill, so the others' hits on it are not the client's saving.
    """
    groups = [results[i : i + choices_per_prompt] for i in range(0, len(results), choices_per_prompt)]
    return Usage.of(
        sum(group[0].prompt_tokens for group in groups),
        sum(result.completion_tokens for result in results),
        sum(min(result.cached_tokens or 0 for result in group) for group in groups),
    )


class ResumingStream:
    """One choice's stream that outlives its worker.

    If the worker's connection breaks mid-stream, the request is sent to another worker with the
    tokens generated so far and the text already delivered; that worker sends the undelivered text
    and continues, so the client sees one stream with no gap and no duplicate.
    """

    def __init__(
        self, service: GenerationService, model: str, request: GenerateRequest, stream: GenerationStream
    ) -> None:
        self._service = service
        self._model = model
        self._request = request
        self._stream = stream
        self._finished = False
        self._stopped = False
        self.resumes = 0

    @property
    def worker_id(self) -> str:
        """The worker streaming now (another one after a resume)."""
        return self._stream.worker_id

    async def chunks(self) -> AsyncGenerator[GenerateChunk, None]:
        token_ids: list[int] = []
        text = ""
        tried = [self._stream.worker_id]
        while True:
            try:
                async with aclosing(self._stream.chunks()) as chunks:
                    async for chunk in chunks:
                        token_ids.extend(chunk.token_ids)
                        text += chunk.text
                        self._finished = chunk.finish_reason is not None
                        yield chunk
                return
            except WorkerError as exc:
                if self._stopped:
                    return  # the worker ended the stream because it was told to stop
                if len(tried) >= self._service.max_attempts:
                    raise
                self._service.router.report_failure(self._stream.worker_id, exc.message)
                logger.warning(
                    "stream %s broke after %d tokens (%s); resuming", self._request.request_id, len(token_ids), exc
                )
                self._stream = await self._service.reopen(self._model, self._resumed(token_ids, text), tried)
                tried.append(self._stream.worker_id)
                self.resumes += 1
                if self._service.router.observer is not None:
                    self._service.router.observer.resumed(self._model)

    def _resumed(self, token_ids: list[int], text: str) -> GenerateRequest:
        if not token_ids:
            return self._request
        return self._request.model_copy(update={"resume": ResumeState(token_ids=token_ids, text_sent=text)})

    def stop(self) -> None:
        """The gateway wants no more of this choice (the word filter stopped it): the worker aborts the
        generation and frees its slot; the stream's end without a finish reason is then expected."""
        if not self._finished and not self._stopped:
            self._service.abort_later(self._stream.address, self._request.request_id)
        self._stopped = True

    async def aclose(self) -> None:
        await self._stream.aclose()
        if not self._finished and not self._stopped:
            # Closing the connection already tells the worker; the explicit abort does not depend
            # on the worker noticing a half-closed socket.
            self._service.abort_later(self._stream.address, self._request.request_id)
            self._finished = True
