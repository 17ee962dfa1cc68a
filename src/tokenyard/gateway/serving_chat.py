"""POST /v1/chat/completions: messages in, a chat completion or a stream of chunks out."""

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
from tokenyard.gateway.logprobs import chat_logprobs
from tokenyard.gateway.outcome import RequestTracker, tracker_of
from tokenyard.gateway.principal import tenant_of
from tokenyard.gateway.streaming import SSE_DONE, cancel_on_disconnect, sse, sse_error
from tokenyard.gateway.structured import ToolPlan, plan_request, worker_messages
from tokenyard.gateway.tool_output import ToolCallStream, tool_message, without_nulls
from tokenyard.protocol.internal import GenerateRequest
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
from tokenyard.protocol.tool_calls import ToolMode
from tokenyard.web import ClosingStreamingResponse


def requested_logprobs(body: ChatCompletionRequest) -> int | None:
    """How many alternatives to report per token (None: no logprobs); `top_logprobs` needs `logprobs`."""
    if not body.logprobs:
        if body.top_logprobs is not None:
            raise InvalidRequestError("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
        return None
    return body.top_logprobs or 0


class ChatServing:
    def __init__(self, service: GenerationService, screen: ContentScreen) -> None:
        self.service = service
        self.screen = screen

    async def create(self, body: ChatCompletionRequest, raw: Request) -> JSONResponse | StreamingResponse:
        refuse_unsupported(body)
        logprobs = requested_logprobs(body)  # refuses top_logprobs without logprobs before anything runs
        plan = plan_request(body)  # response_format and tools: refused here if inconsistent
        guard = self.screen.chat(body, raw)  # a listed word in the request: refused here
        completion_id = new_request_id("chatcmpl")
        requests = self._worker_requests(body, completion_id, plan, logprobs, tenant_of(raw.state))
        tracker = tracker_of(raw.state)
        tracker.begin(body.model, body, stream=body.stream)
        if body.stream:
            streams = await self.service.open(body.model, requests)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._stream(body.model, completion_id, streams, include_usage, plan.mode, tracker, guard)
            return ClosingStreamingResponse(events, media_type="text/event-stream")
        # Watching for the client from the start: it may leave while the first token is awaited.
        results = await cancel_on_disconnect(raw, self.service.run(body.model, requests, tracker, guard))
        usage = usage_of(results, body.n)
        track_answer(tracker, results, usage, whole=True)
        answers = [self._message(r.text, r.finish_reason, plan.mode) for r in results]
        response = ChatCompletionResponse(
            id=completion_id,
            model=body.model,
            choices=[
                ChatChoice(
                    index=i,
                    message=answers[i][0],
                    logprobs=chat_logprobs(r.logprobs) if body.logprobs else None,
                    finish_reason=answers[i][1],  # type: ignore[arg-type]
                )
                for i, r in enumerate(results)
            ],
            usage=usage,
        )
        return JSONResponse(response.model_dump())

    @staticmethod
    def _message(text: str, reason: str | None, mode: ToolMode | None) -> tuple[ResponseMessage, str | None]:
        """The answer as a message: plain content, or in tool mode its calls (`gateway.tool_output`)."""
        return (ResponseMessage(content=text), reason) if mode is None else tool_message(text, reason, mode)

    @staticmethod
    def _worker_requests(
        body: ChatCompletionRequest, completion_id: str, plan: ToolPlan, logprobs: int | None, tenant: str | None
    ) -> list[GenerateRequest]:
        messages = worker_messages(body)
        max_tokens = body.max_completion_tokens or body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        return [
            GenerateRequest(
                request_id=f"{completion_id}-{choice}",
                model=body.model,
                messages=messages,
                tools=plan.prompt_tools,
                sampling=sampling_options(body, max_tokens, choice, logprobs=logprobs, guide=plan.guide),
                max_tokens_param=param,
                tenant=tenant,
            )
            for choice in range(body.n)
        ]

    async def _stream(
        self,
        model: str,
        completion_id: str,
        streams: list[ResumingStream],
        include_usage: bool,
        mode: ToolMode | None = None,
        tracker: RequestTracker | None = None,
        guard: OutputGuard | None = None,
    ) -> AsyncIterator[str]:
        def chunk(choices: list[ChatChunkChoice], usage: object = None) -> str:
            data = ChatCompletionChunk(id=completion_id, model=model, choices=choices).model_dump()
            for choice in data["choices"]:
                choice["delta"] = without_nulls(choice["delta"])
            if include_usage:
                data["usage"] = usage
            else:
                data.pop("usage")
            return sse(data)

        for index in range(len(streams)):
            yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
        counts = [ChoiceResult() for _ in streams]
        tool_streams = [ToolCallStream(mode) if mode else None for _ in streams]
        tracker = tracker or tracker_of(None)
        try:
            async with aclosing(self.service.merged(streams, guard)) as merged:
                async for index, part in merged:
                    counts[index].count(part)
                    tracker.on_chunk(index, part, streams[index].worker_id)
                    counts[index].finish_reason = part.finish_reason or counts[index].finish_reason
                    if tracker.keep_content:
                        counts[index].text += part.text
                    tools = tool_streams[index]
                    if part.text or part.logprobs:
                        logprobs = chat_logprobs(part.logprobs) if part.logprobs is not None else None
                        deltas = [ChatDelta(content=part.text)] if tools is None else tools.deltas(part.text)
                        if not deltas and logprobs is not None:
                            deltas = [ChatDelta()]
                        for n, delta in enumerate(deltas):
                            choice = ChatChunkChoice(index=index, delta=delta, logprobs=None if n else logprobs)
                            yield chunk([choice])
                    if part.finish_reason is not None:
                        reason = part.finish_reason if tools is None else tools.finish_reason(part.finish_reason)
                        yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason)])  # type: ignore[arg-type]
                    tracker.on_delivered(index, counts[index].completion_tokens)
        except Exception as exc:
            yield sse_error(exc)
            yield SSE_DONE
            return
        finally:
            track_answer(tracker, counts, usage_of(counts, len(counts)), whole=False)
        if include_usage:
            yield chunk([], usage_of(counts, len(counts)).model_dump())
        yield SSE_DONE
