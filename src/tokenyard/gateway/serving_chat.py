"""POST /v1/chat/completions: messages in, a chat completion or a stream of chunks out.

The request becomes one worker request per choice (`request_mapping`); the service runs them
(`generation`); this module turns what comes back into OpenAI's answer, or its stream's events.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tokenyard.gateway.choices import ChoiceResult, track_answer, usage_of
from tokenyard.gateway.filtering import ContentScreen
from tokenyard.gateway.generation import GenerationService
from tokenyard.gateway.logprobs import chat_logprobs
from tokenyard.gateway.outcome import tracker_of
from tokenyard.gateway.principal import tenant_of
from tokenyard.gateway.request_mapping import chat_requests, new_request_id, refuse_unsupported, requested_logprobs
from tokenyard.gateway.streaming import cancel_on_disconnect, sse, sse_answer, stream_chunk
from tokenyard.gateway.structured import plan_request
from tokenyard.gateway.tool_output import ToolCallStream, tool_message, without_nulls
from tokenyard.protocol.finish import FinishReason
from tokenyard.protocol.internal import GenerateChunk
from tokenyard.protocol.openai import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    Usage,
)
from tokenyard.protocol.openai import (
    ChatMessage as ResponseMessage,
)
from tokenyard.protocol.tool_calls import ToolMode
from tokenyard.web import ClosingStreamingResponse


class ChatServing:
    """Chat completions over the generation service; the content screen refuses and filters words."""

    def __init__(self, service: GenerationService, screen: ContentScreen) -> None:
        self.service = service
        self.screen = screen

    async def create(self, body: ChatCompletionRequest, raw: Request) -> JSONResponse | StreamingResponse:
        refuse_unsupported(body)
        logprobs = requested_logprobs(body)  # refuses top_logprobs without logprobs before anything runs
        plan = plan_request(body)  # response_format and tools: refused here if inconsistent
        guard = self.screen.chat(body, raw)  # a listed word in the request: refused here
        completion_id = new_request_id("chatcmpl")
        requests = chat_requests(body, completion_id, plan, logprobs, tenant_of(raw.state))
        tracker = tracker_of(raw.state)
        tracker.begin(body.model, body, stream=body.stream)
        if body.stream:
            streams = await self.service.open(body.model, requests)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = sse_answer(
                self.service.merged(streams, guard),
                streams,
                ChatEvents(body.model, completion_id, len(streams), include_usage, plan.mode),
                choices_per_prompt=len(streams),
                include_usage=include_usage,
                tracker=tracker,
            )
            return ClosingStreamingResponse(events, media_type="text/event-stream")
        # Watching for the client from the start: it may leave while the first token is awaited.
        results = await cancel_on_disconnect(raw, self.service.run(body.model, requests, tracker, guard))
        usage = usage_of(results, body.n)
        track_answer(tracker, results, usage, whole=True)
        response = ChatCompletionResponse(
            id=completion_id,
            model=body.model,
            choices=[self._choice(i, r, plan.mode, with_logprobs=bool(body.logprobs)) for i, r in enumerate(results)],
            usage=usage,
        )
        return JSONResponse(response.model_dump())

    @staticmethod
    def _choice(index: int, result: ChoiceResult, mode: ToolMode | None, *, with_logprobs: bool) -> ChatChoice:
        """The answer as a message: plain content, or in tool mode its calls (`gateway.tool_output`)."""
        reason: FinishReason | None
        message, reason = ResponseMessage(content=result.text), result.finish_reason
        if mode is not None:
            message, reason = tool_message(result.text, result.finish_reason, mode)
        logprobs = chat_logprobs(result.logprobs) if with_logprobs else None
        return ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=reason)


class ChatEvents:
    """A chat stream's events: each choice's role first, then content (or tool-call) deltas, each
    choice's finish reason in a chunk of its own."""

    def __init__(
        self, model: str, completion_id: str, num_choices: int, include_usage: bool, mode: ToolMode | None
    ) -> None:
        self._model, self._id, self._include_usage = model, completion_id, include_usage
        self._num_choices = num_choices
        self._tools = [ToolCallStream(mode) if mode else None for _ in range(num_choices)]

    def opening(self) -> list[str]:
        return [
            self._chunk([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
            for index in range(self._num_choices)
        ]

    def events(self, index: int, chunk: GenerateChunk) -> tuple[list[str], str]:
        tools = self._tools[index]
        events: list[str] = []
        if chunk.text or chunk.logprobs:
            logprobs = chat_logprobs(chunk.logprobs) if chunk.logprobs is not None else None
            deltas = [ChatDelta(content=chunk.text)] if tools is None else tools.deltas(chunk.text)
            if not deltas and logprobs is not None:
                deltas = [ChatDelta()]
            # The chunk's logprobs ride on its first delta only, so each token's entry is sent once.
            events += [
                self._chunk([ChatChunkChoice(index=index, delta=delta, logprobs=None if n else logprobs)])
                for n, delta in enumerate(deltas)
            ]
        if chunk.finish_reason is not None:
            reason: FinishReason | None = (
                chunk.finish_reason if tools is None else tools.finish_reason(chunk.finish_reason)
            )
            events.append(self._chunk([ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason)]))
        return events, chunk.text

    def usage(self, usage: Usage) -> str:
        return sse(ChatCompletionChunk(id=self._id, model=self._model, choices=[], usage=usage).model_dump())

    def _chunk(self, choices: list[ChatChunkChoice]) -> str:
        data = stream_chunk(ChatCompletionChunk(id=self._id, model=self._model, choices=choices), self._include_usage)
        for choice in data["choices"]:
            choice["delta"] = without_nulls(choice["delta"])
        return sse(data)
