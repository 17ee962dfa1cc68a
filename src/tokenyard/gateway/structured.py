"""Structured output and tools, request side: what the worker needs to honour them.

OpenAI's `response_format`, `tools`, `tool_choice` and `parallel_tool_calls` become a `ToolPlan`:
a guide for constrained decoding (compiled on the worker, `engine.guided`), the functions to
describe in the prompt, and the tool mode the answer is read back in (`gateway.tool_output`).
Everything a client can get wrong here is a 400 naming the field, before any worker is asked;
schemas that do not compile are the worker's 400, naming the same field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.internal import ChatMessage, FunctionTool, ToolCall
from tokenyard.protocol.openai import (
    ChatCompletionRequest,
    FunctionDefinition,
    NamedToolChoice,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
)
from tokenyard.protocol.sampling import Guide
from tokenyard.protocol.tool_calls import FunctionSpec, ToolMode, tool_call_grammar

MAX_SCHEMA_BYTES = 64 * 1024  # far above real schemas; bounds what one request asks the compiler to do
ANY_OBJECT: dict[str, Any] = {"type": "object"}
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request is constrained and read back."""

    guide: Guide | None = None
    prompt_tools: list[FunctionTool] | None = None  # None: the prompt mentions no tools
    mode: ToolMode | None = None  # None: the answer is plain content, never tool calls


def plan_request(body: ChatCompletionRequest) -> ToolPlan:
    """The request's guide, prompt tools and tool mode; a 400 for any inconsistent field."""
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if body.tools else "none")
    if choice != "none" and not body.tools:
        raise InvalidRequestError("'tool_choice' is only allowed when 'tools' are given.", param="tool_choice")
    answer_schema = _answer_schema(body)
    if choice == "none" or not body.tools:
        guide = _schema_guide(*answer_schema, "response_format") if answer_schema else None
        return ToolPlan(guide=guide)
    definitions = [tool.function for tool in body.tools]
    offered = _functions(definitions)
    prompt_tools = [
        FunctionTool(name=f.name, description=d.description, parameters=f.parameters)
        for f, d in zip(offered, definitions, strict=True)
    ]
    functions = offered
    if isinstance(choice, NamedToolChoice):  # every tool stays in the prompt; only this one may be called
        functions = [f for f in offered if f.name == choice.function.name]
        if not functions:
            raise InvalidRequestError(
                f"'tool_choice' names function '{choice.function.name}', which is not in 'tools'.", param="tool_choice"
            )
    mode: ToolMode = "auto" if choice == "auto" else "required"
    parallel = body.parallel_tool_calls is not False and not isinstance(choice, NamedToolChoice)
    grammar = tool_call_grammar(functions, mode=mode, parallel=parallel, answer=answer_schema)
    return ToolPlan(Guide(kind="lark", source=grammar, param="tools"), prompt_tools, mode)


def worker_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    """The conversation with its content flattened to text, earlier calls and tool results kept."""
    return [
        ChatMessage(
            role=m.role,
            content=m.text(),
            name=m.name,
            tool_calls=[ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in m.tool_calls]
            if m.tool_calls
            else None,
            tool_call_id=m.tool_call_id,
        )
        for m in body.messages
    ]


def _answer_schema(body: ChatCompletionRequest) -> tuple[dict[str, Any], bool] | None:
    """The JSON schema a plain answer must match (and its strictness), from `response_format`."""
    fmt = body.response_format
    if isinstance(fmt, ResponseFormatJsonObject):
        return ANY_OBJECT, False
    if isinstance(fmt, ResponseFormatJsonSchema):
        schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else ANY_OBJECT
        _check_size(schema, "response_format")
        return schema, bool(fmt.json_schema.strict)
    return None


def _schema_guide(schema: dict[str, Any], strict: bool, param: str) -> Guide:
    return Guide(kind="json_schema", source=json.dumps(schema), strict=strict, param=param)


def _functions(definitions: list[FunctionDefinition]) -> list[FunctionSpec]:
    names = [d.name for d in definitions]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise InvalidRequestError(f"'tools' names function '{duplicate}' more than once.", param="tools")
    return [FunctionSpec(d.name, _parameters(d), strict=bool(d.strict)) for d in definitions]


def _parameters(definition: FunctionDefinition) -> dict[str, Any]:
    """The arguments' schema, always of an object (OpenAI's rule); absent means no arguments."""
    if definition.parameters is None:
        return NO_ARGUMENTS
    declared = definition.parameters.get("type", "object")
    if declared != "object":
        raise InvalidRequestError(
            f"The parameters of function '{definition.name}' must be a JSON schema of type 'object', "
            f"not {json.dumps(declared)}.",
            param="tools",
        )
    _check_size(definition.parameters, "tools")
    return {**definition.parameters, "type": "object"}


def _check_size(schema: dict[str, Any], param: str) -> None:
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidRequestError(f"The schema in '{param}' is over {MAX_SCHEMA_BYTES} bytes.", param=param)
