"""POST /v1/completions: one or more prompts (text or token ids) in, text completions out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.generation import (
    GenerationService,
    ResumingStream,
    new_request_id,
    refuse_unsupported,
    sampling_options,
    usage_of,
)
from tokenyard.gateway.streaming import SSE_DONE, cancel_on_disconnect, sse, sse_error
from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.openai import CompletionChoice, CompletionRequest, CompletionResponse
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


class CompletionServing:
    def __init__(self, service: GenerationService) -> None:
        self.service = service

    async def create(self, body: CompletionRequest, raw: Request) -> JSONResponse | StreamingResponse:
        refuse_unsupported(body)
        completion_id = new_request_id("cmpl")
        prompts = split_prompts(body.prompt)
        requests = [
            GenerateRequest(
                request_id=f"{completion_id}-{p}-{c}",
                model=body.model,
                prompt=prompt if isinstance(prompt, str) else None,
                prompt_token_ids=prompt if isinstance(prompt, list) else None,
                sampling=sampling_options(body, body.max_tokens, c),
            )
            for p, prompt in enumerate(prompts)
            for c in range(body.n)
        ]
        if body.stream:
            streams = await self.service.open(body.model, requests)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return ClosingStreamingResponse(
                self._stream(body, completion_id, streams, include_usage), media_type="text/event-stream"
            )
        # Watching for the client from the start: it may leave while the first token is awaited.
        results = await cancel_on_disconnect(raw, self.service.run(body.model, requests))
        prompt_tokens = {i // body.n: r.prompt_tokens for i, r in enumerate(results)}
        response = CompletionResponse(
            id=completion_id,
            model=body.model,
            choices=[
                CompletionChoice(index=i, text=r.text, finish_reason=r.finish_reason)  # type: ignore[arg-type]
                for i, r in enumerate(results)
            ],
            usage=usage_of(prompt_tokens, sum(r.completion_tokens for r in results)),
        )
        return JSONResponse(response.model_dump())

    async def _stream(
        self,
        body: CompletionRequest,
        completion_id: str,
        streams: list[ResumingStream],
        include_usage: bool,
    ) -> AsyncIterator[str]:
        def chunk(index: int, text: str, finish_reason: str | None) -> str:
            choice = CompletionChoice(index=index, text=text, finish_reason=finish_reason)  # type: ignore[arg-type]
            data = CompletionResponse(id=completion_id, model=body.model, choices=[choice]).model_dump()
            if include_usage:
                data["usage"] = None
            else:
                data.pop("usage")
            return sse(data)

        prompt_tokens: dict[int, int] = {}
        completion = [0] * len(streams)
        try:
            async with aclosing(self.service.merged(streams)) as merged:
                async for index, part in merged:
                    prompt_tokens[index // body.n] = part.prompt_tokens
                    completion[index] = part.completion_tokens
                    if part.text or part.finish_reason is not None:
                        yield chunk(index, part.text, part.finish_reason)
        except Exception as exc:
            yield sse_error(exc)
            yield SSE_DONE
            return
        if include_usage:
            final = CompletionResponse(id=completion_id, model=body.model, choices=[]).model_dump()
            final["usage"] = usage_of(prompt_tokens, sum(completion)).model_dump()
            yield sse(final)
        yield SSE_DONE
