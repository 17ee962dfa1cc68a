"""How tools, and the turns that call them, reach the prompt.

A chat template that knows tools (it mentions `tools`: Qwen2.5, Llama 3.1, Hermes, Mistral...)
gets them the way transformers passes them, `apply_chat_template(messages, tools=[...])`, and an
assistant turn's calls as `tool_calls` with parsed arguments, as those templates expect.

A template that does not (SmolLM2's) gets `DEFAULT_TOOL_PROMPT` in its system message: the
functions' signatures and the `<tool_call>` format that tokenyard's guided decoding enforces
(`protocol.tool_calls`; the wording is Qwen2.5's, which many small models have seen). Earlier calls
are rendered as that same text, and tool results as user turns inside `<tool_response>` tags, since
such templates know no "tool" role (some refuse it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tokenyard.protocol.internal import ChatMessage, FunctionTool
from tokenyard.protocol.tool_calls import format_call

DEFAULT_TOOL_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def template_supports_tools(chat_template: object) -> bool:
    """True when the template renders `tools` itself (or ships a named "tool_use" template)."""
    if isinstance(chat_template, dict):
        return "tool_use" in chat_template or any(template_supports_tools(t) for t in chat_template.values())
    return isinstance(chat_template, str) and "tools" in chat_template


def tool_dicts(tools: Sequence[FunctionTool]) -> list[dict[str, Any]]:
    """OpenAI's tool objects, the shape chat templates take."""
    return [{"type": "function", "function": tool.model_dump(exclude_none=True)} for tool in tools]


def template_messages(
    messages: Sequence[ChatMessage], tools: Sequence[FunctionTool] | None, *, native: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (and tools) to hand to `apply_chat_template`; see the module docstring."""
    if native:
        return [_native_message(m) for m in messages], tool_dicts(tools) if tools else None
    rendered = [_plain_message(m) for m in messages]
    if tools:
        listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tool_dicts(tools))
        section = DEFAULT_TOOL_PROMPT.format(tools=listing)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {**rendered[0], "content": f"{rendered[0]['content']}\n\n{section}"}
        else:
            rendered.insert(0, {"role": "system", "content": section})
    return rendered, None


def _base(message: ChatMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:  # templates that support `name` test for the key, not its value
        entry["name"] = message.name
    return entry


def _native_message(message: ChatMessage) -> dict[str, Any]:
    entry = _base(message)
    if message.tool_calls:
        entry["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _parsed(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        entry["tool_call_id"] = message.tool_call_id
    return entry


def _plain_message(message: ChatMessage) -> dict[str, Any]:
    entry = _base(message)
    if message.tool_calls:
        calls = "\n".join(format_call(c.name, c.arguments) for c in message.tool_calls)
        entry["content"] = f"{message.content}\n{calls}" if message.content else calls
    if message.role == "tool":
        entry = {"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"}
    return entry


def _parsed(arguments: str) -> object:
    """Templates write arguments with `tojson`, so they want an object; unparsable text stays text."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
