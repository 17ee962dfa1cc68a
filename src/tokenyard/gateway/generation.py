"""What chat and text completions share: OpenAI fields to worker requests, fan-out, collection.

A request with `n` choices (or several prompts) becomes one worker request per choice, all sent
to the one worker that a single controller lookup picked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.failover import with_failover
from tokenyard.gateway.router import Router
from tokenyard.gateway.streaming import merge_streams
from tokenyard.gateway.worker_client import GenerationStream, WorkerClient
from tokenyard.protocol.internal import DispatchResponse, GenerateChunk, GenerateRequest, SamplingOptions
from tokenyard.protocol.openai import SamplingFields, Usage, unsupported_fields


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def refuse_unsupported(body: SamplingFields) -> None:
    """A 400 naming the first field tokenyard cannot honour yet, instead of ignoring it."""
    for name in unsupported_fields(body):
        raise InvalidRequestError(f"'{name}' is not supported by this server yet.", param=name)


def sampling_options(body: SamplingFields, max_tokens: int | None, choice: int) -> SamplingOptions:
    """OpenAI's fields with OpenAI's defaults; a seed is offset per choice so n>1 choices differ."""
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
    )


@dataclass
class ChoiceResult:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerationService:
    """Dispatches a fan-out of worker requests and opens their streams, failing over if needed."""

    def __init__(self, router: Router, workers: WorkerClient, max_attempts: int, request_timeout: float) -> None:
        self.router = router
        self.workers = workers
        self.max_attempts = max_attempts
        self.request_timeout = request_timeout

    def merged(self, streams: list[GenerationStream]) -> AsyncGenerator[tuple[int, GenerateChunk], None]:
        """The choices' chunks as they come, bounded by the request timeout."""
        return merge_streams(streams, self.request_timeout)

    async def open(self, model: str, requests: list[GenerateRequest]) -> list[GenerationStream]:
        """Open every choice's stream on one worker, trying another worker if that one fails."""
        return await with_failover(
            self.router, model, lambda target: self._open_on(target, requests), self.max_attempts
        )

    async def _open_on(self, target: DispatchResponse, requests: list[GenerateRequest]) -> list[GenerationStream]:
        """Open every choice's stream, or none: an error closes those already open."""
        opened = await asyncio.gather(
            *(self.workers.open_generation(target.address, r) for r in requests), return_exceptions=True
        )
        failures = [o for o in opened if isinstance(o, BaseException)]
        streams = [o for o in opened if isinstance(o, GenerationStream)]
        if failures:
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
            raise failures[0]
        return streams

    async def collect(self, streams: list[GenerationStream]) -> list[ChoiceResult]:
        results = [ChoiceResult() for _ in streams]
        async with aclosing(self.merged(streams)) as merged:
            async for index, chunk in merged:
                result = results[index]
                result.text += chunk.text
                result.prompt_tokens = chunk.prompt_tokens
                result.completion_tokens = chunk.completion_tokens
                result.finish_reason = chunk.finish_reason or result.finish_reason
        return results


def usage_of(prompt_tokens_by_prompt: dict[int, int], completion_tokens: int) -> Usage:
    return Usage.of(sum(prompt_tokens_by_prompt.values()), completion_tokens)
