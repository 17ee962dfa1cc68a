"""Tool calls, response side: a tool-mode answer read back into OpenAI's `tool_calls`, whole or streamed.

`ToolCallStream` turns one choice's text, as it arrives, into chat deltas: content, or for each call
a first piece with its index, a fresh `call_...` id, its type and name (arguments ""), then argument
fragments, as OpenAI streams them. The non-streamed message is built by the same parser from the
whole text, so both carry the same calls. A choice that made calls and stopped normally finishes with
"tool_calls"; one cut by `max_tokens` keeps "length" (its last call's arguments are then incomplete).
"""

from __future__ import annotations

import uuid

from tokenyard.protocol.finish import ChunkFinishReason, FinishReason
from tokenyard.protocol.openai import (
    ChatDelta,
    ChatMessage,
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
)
from tokenyard.protocol.tool_calls import ToolCallParser, ToolMode, merge_deltas


def without_nulls(value: dict[str, object]) -> dict[str, object]:
    """A dumped delta without its null fields, nested ones included: OpenAI sends a call's id, type and
    name only in its first piece, and nothing but the fields that changed."""
    return {k: without_nulls(v) if isinstance(v, dict) else _compact(v) for k, v in value.items() if v is not None}


def _compact(value: object) -> object:
    return [without_nulls(v) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else value


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def finish_reason_of(reason: ChunkFinishReason | None, num_calls: int) -> FinishReason | None:
    return "tool_calls" if reason == "stop" and num_calls else reason


class ToolCallStream:
    """One choice's deltas in tool mode."""

    def __init__(self, mode: ToolMode) -> None:
        self._parser = ToolCallParser(mode)
        self._ids: list[str] = []

    def deltas(self, text: str) -> list[ChatDelta]:
        """What `text` adds to the answer, one delta per chunk to send (none while a header is held back).

        A call's first piece is a chunk of its own, even when its first arguments came in the same text.
        """
        content, pieces = self._parser.feed(text)
        deltas = [ChatDelta(content=content)] if content else []
        for piece in pieces:
            if piece.name is not None:
                self._ids.append(new_call_id())
                function = FunctionCallDelta(name=piece.name, arguments="")
                header = ToolCallDelta(index=piece.index, id=self._ids[-1], type="function", function=function)
                deltas.append(ChatDelta(tool_calls=[header]))
            if piece.arguments:
                fragment = ToolCallDelta(index=piece.index, function=FunctionCallDelta(arguments=piece.arguments))
                deltas.append(ChatDelta(tool_calls=[fragment]))
        return deltas

    def finish_reason(self, reason: ChunkFinishReason | None) -> FinishReason | None:
        return finish_reason_of(reason, self._parser.num_calls)


def tool_message(
    text: str, reason: ChunkFinishReason | None, mode: ToolMode
) -> tuple[ChatMessage, FinishReason | None]:
    """The whole answer as a message with `tool_calls` (content null when it is only calls)."""
    parser = ToolCallParser(mode)
    content, pieces = parser.feed(text)
    calls = [
        ToolCall(id=new_call_id(), function=FunctionCall(name=name, arguments=arguments))
        for name, arguments in merge_deltas(pieces)
    ]
    message = ChatMessage(content=content or (None if calls else ""), tool_calls=calls or None)
    return message, finish_reason_of(reason, len(calls))
