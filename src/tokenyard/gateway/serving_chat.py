"""POST /v1/chat/completions: messages in, a chat completion or a stream of chunks out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tokenyard.gateway.generation import (
    GenerationService,
    ResumingStream,
    new_request_id,
    refuse_unsupported,
    sampling_options,
    usage_of,
)
from tokenyard.gateway.streaming import SSE_DONE, cancel_on_disconnect, sse, sse_error
from tokenyard.protocol.internal import ChatMessage, GenerateRequest
from tokenyard.protocol.openai import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
)
from tokenyard.protocol.openai import (
    ChatMessage as ResponseMessage,
)
from tokenyard.web import ClosingStreamingResponse


class ChatServing:
    def __init__(self, service: GenerationService) -> None:
        self.service = service

    async def create(self, body: ChatCompletionRequest, raw: Request) -> JSONResponse | StreamingResponse:
        refuse_unsupported(body)
        completion_id = new_request_id("chatcmpl")
        requests = self._worker_requests(body, completion_id)
        if body.stream:
            streams = await self.service.open(body.model, requests)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._stream(body.model, completion_id, streams, include_usage)
            return ClosingStreamingResponse(events, media_type="text/event-stream")
        # Watching for the client from the start: it may leave while the first token is awaited.
        results = await cancel_on_disconnect(raw, self.service.run(body.model, requests))
        response = ChatCompletionResponse(
            id=completion_id,
            model=body.model,
            choices=[
                ChatChoice(index=i, message=ResponseMessage(content=r.text), finish_reason=r.finish_reason)  # type: ignore[arg-type]
                for i, r in enumerate(results)
            ],
            usage=usage_of({0: results[0].prompt_tokens}, sum(r.completion_tokens for r in results)),
        )
        return JSONResponse(response.model_dump())

    @staticmethod
    def _worker_requests(body: ChatCompletionRequest, completion_id: str) -> list[GenerateRequest]:
        messages = [ChatMessage(role=m.role, content=m.text(), name=m.name) for m in body.messages]
        max_tokens = body.max_completion_tokens or body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        return [
            GenerateRequest(
                request_id=f"{completion_id}-{choice}",
                model=body.model,
                messages=messages,
                sampling=sampling_options(body, max_tokens, choice),
                max_tokens_param=param,
            )
            for choice in range(body.n)
        ]

    async def _stream(
        self, model: str, completion_id: str, streams: list[ResumingStream], include_usage: bool
    ) -> AsyncIterator[str]:
        def chunk(choices: list[ChatChunkChoice], usage: object = None) -> str:
            data = ChatCompletionChunk(id=completion_id, model=model, choices=choices).model_dump()
            for choice in data["choices"]:
                choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
            if include_usage:
                data["usage"] = usage
            else:
                data.pop("usage")
            return sse(data)

        for index in range(len(streams)):
            yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
        prompt_tokens, completion = 0, [0] * len(streams)
        try:
            async with aclosing(self.service.merged(streams)) as merged:
                async for index, part in merged:
                    prompt_tokens, completion[index] = part.prompt_tokens, part.completion_tokens
                    if part.text:
                        yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(content=part.text))])
                    if part.finish_reason is not None:
                        yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=part.finish_reason)])
        except Exception as exc:
            yield sse_error(exc)
            yield SSE_DONE
            return
        if include_usage:
            yield chunk([], usage_of({0: prompt_tokens}, sum(completion)).model_dump())
        yield SSE_DONE
