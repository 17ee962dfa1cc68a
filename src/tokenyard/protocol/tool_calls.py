"""The text a model writes to call tools: its format, the grammar that forces it, the parser that reads it.

One call is the Hermes/Qwen form, which tool-trained chat templates (Qwen2.5, Hermes, SmolLM3) teach:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Parallel calls follow one another, separated by a newline. The gateway turns `tools` + `tool_choice`
into a Lark grammar (`tool_call_grammar`) that the worker's guided decoding enforces: the name is one
of the functions, the arguments match that function's parameter schema. With `tool_choice` "auto"
the model may instead answer in plain text, which then must not start with "<": the first character
decides, so even a 135M model either writes text or is led through a well-formed call. The gateway
reads the output back with `ToolCallParser`, incrementally for streams, so a streamed answer and a
whole one are built by the same code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

OPEN = "<tool_call>\n"
CLOSE = "\n</tool_call>"
SEPARATOR = "\n"
# One JSON layout for everything guided decoding writes (json.dumps' default separators, no free
# whitespace), so a small model cannot spin on blank space and the parser knows the exact text.
JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function names
_HEADER = re.compile(r'<tool_call>\n\{"name": "([a-zA-Z0-9_-]{1,64})", "arguments": ')
_TRAILER = "}" + CLOSE

ToolMode = Literal["auto", "required"]


@dataclass(frozen=True)
class FunctionSpec:
    """A callable function: its name, the JSON schema of its arguments, and whether that is strict."""

    name: str
    parameters: dict[str, Any]
    strict: bool = False


def call_prefix(name: str) -> str:
    """The text of a call up to its arguments (the arguments follow, then `call_suffix`)."""
    return f'{OPEN}{{"name": "{name}", "arguments": '


def format_call(name: str, arguments: str) -> str:
    """A whole call, as the model writes it (used to render earlier calls in a conversation)."""
    return call_prefix(name) + arguments + _TRAILER


def tool_call_grammar(
    functions: list[FunctionSpec], *, mode: ToolMode, parallel: bool, answer: tuple[dict[str, Any], bool] | None = None
) -> str:
    """A Lark grammar (llguidance's dialect) for one call, or several when `parallel`; in "auto" mode
    also a plain answer: text that does not start with "<", or JSON matching `answer` (a schema and
    its strictness, from `response_format`), which starts with "{" or "[" anyway."""
    rules = [f"start: {'answer | calls' if mode == 'auto' else 'calls'}"]
    rules.append('calls: call ("\\n" call)*' if parallel else "calls: call")
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(functions))))
    for i, function in enumerate(functions):
        prefix, suffix = json.dumps(call_prefix(function.name)), json.dumps(_TRAILER)
        rules.append(f"call_{i}: {prefix} %json {_with_layout(function.parameters, function.strict)} {suffix}")
    if mode == "auto" and answer is not None:
        rules.append(f"answer: %json {_with_layout(*answer)}")
    elif mode == "auto":
        rules.append(r"answer: /[^<](.|\n)*/")
    return "\n".join(rules) + "\n"


def _with_layout(schema: dict[str, Any], strict: bool) -> str:
    """A schema for `%json`, carrying the JSON layout and strictness in llguidance's `x-guidance`."""
    return json.dumps({**schema, "x-guidance": {**JSON_LAYOUT, "lenient": not strict}})


@dataclass
class ToolCallDelta:
    """A piece of call number `index`: its name (first piece only) and a fragment of its arguments."""

    index: int
    name: str | None = None
    arguments: str = ""


class ToolCallParser:
    """Splits a tool-calling output, as it streams, into content text and tool-call pieces.

    In "auto" mode the first character decides: "<" starts calls, anything else is plain content.
    The arguments are passed on as they arrive, up to the end of their JSON value (found by
    tracking brackets and strings), so a stream shows them growing as OpenAI's does.
    """

    def __init__(self, mode: ToolMode) -> None:
        self._state = "decide" if mode == "auto" else "header"
        self._buffer = ""
        self._index = -1
        self._depth, self._in_string, self._escaped = 0, False, False

    @property
    def num_calls(self) -> int:
        return self._index + 1

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Content text and call pieces made complete by `text`."""
        self._buffer += text
        content, deltas = "", list[ToolCallDelta]()
        while True:
            before = (self._state, len(self._buffer))
            if self._state == "decide" and self._buffer:
                self._state = "header" if self._buffer.startswith("<") else "content"
            if self._state == "content":
                content, self._buffer = content + self._buffer, ""
            elif self._state == "header":
                self._read_header(deltas)
            elif self._state == "arguments":
                self._read_arguments(deltas)
            elif self._state == "trailer":
                self._read_trailer()
            if (self._state, len(self._buffer)) == before:
                return content, deltas

    def _read_header(self, deltas: list[ToolCallDelta]) -> None:
        match = _HEADER.match(self._buffer)
        if match is not None:
            self._index += 1
            deltas.append(ToolCallDelta(self._index, name=match[1]))
            self._buffer = self._buffer[match.end() :]
            self._state = "arguments"

    def _read_arguments(self, deltas: list[ToolCallDelta]) -> None:
        """Pass on the buffer up to the end of the arguments' JSON value."""
        for position, char in enumerate(self._buffer):
            if self._escaped:
                self._escaped = False
            elif self._in_string:
                self._escaped = char == "\\"
                self._in_string = char != '"'
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    deltas.append(ToolCallDelta(self._index, arguments=self._buffer[: position + 1]))
                    self._buffer, self._state = self._buffer[position + 1 :], "trailer"
                    return
        if self._buffer:
            deltas.append(ToolCallDelta(self._index, arguments=self._buffer))
            self._buffer = ""

    def _read_trailer(self) -> None:
        ending = _TRAILER + SEPARATOR
        if self._buffer.startswith(ending):
            self._buffer, self._state = self._buffer[len(ending) :], "header"


def merge_deltas(deltas: list[ToolCallDelta]) -> list[tuple[str, str]]:
    """Whole calls (name, arguments) from their pieces, in call order."""
    calls: list[list[str]] = []
    for delta in deltas:
        if delta.name is not None:
            calls.append([delta.name, ""])
        calls[delta.index][1] += delta.arguments
    return [(name, arguments) for name, arguments in calls]
