"""response_format, tools and tool_choice to the worker's guide, prompt tools and tool mode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.structured import MAX_SCHEMA_BYTES, NO_ARGUMENTS, plan_request, worker_messages
from tokenyard.protocol.openai import ChatCompletionRequest

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA, "strict": True}},
    {"type": "function", "function": {"name": "get_time", "description": "now"}},
]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_plain_text_has_no_guide() -> None:
    assert plan_request(request()).guide is None
    assert plan_request(request(response_format={"type": "text"})).guide is None


def test_json_object_and_json_schema_become_schema_guides() -> None:
    guide = plan_request(request(response_format={"type": "json_object"})).guide
    assert guide is not None and (guide.kind, json.loads(guide.source), guide.strict) == (
        "json_schema",
        {"type": "object"},
        False,
    )
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA, "strict": True}}
    guide = plan_request(request(response_format=fmt)).guide
    assert guide is not None and json.loads(guide.source) == SCHEMA and guide.strict
    assert guide.param == "response_format"


def test_tools_default_to_auto_with_every_function_in_the_prompt() -> None:
    plan = plan_request(request(tools=TOOLS))
    assert plan.mode == "auto"
    assert plan.guide is not None and plan.guide.kind == "lark" and plan.guide.param == "tools"
    assert plan.guide.source.startswith("start: answer | calls\ncalls: call (")  # parallel by default
    assert [t.name for t in plan.prompt_tools or []] == ["get_weather", "get_time"]
    assert (plan.prompt_tools or [])[1].parameters == NO_ARGUMENTS


def test_tool_choice_none_leaves_tools_out() -> None:
    plan = plan_request(request(tools=TOOLS, tool_choice="none", response_format={"type": "json_object"}))
    assert plan.mode is None and plan.prompt_tools is None
    assert plan.guide is not None and plan.guide.kind == "json_schema"


def test_required_and_named_choices() -> None:
    required = plan_request(request(tools=TOOLS, tool_choice="required", parallel_tool_calls=False))
    assert required.mode == "required" and required.guide is not None
    assert required.guide.source.startswith("start: calls\ncalls: call\n")
    named = plan_request(request(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}))
    assert named.guide is not None and "get_time" in named.guide.source and "get_weather" not in named.guide.source
    assert "calls: call\n" in named.guide.source  # one call of the named function


def test_auto_with_a_response_format_constrains_the_plain_answer() -> None:
    plan = plan_request(request(tools=TOOLS, response_format={"type": "json_object"}))
    assert plan.guide is not None and 'answer: %json {"type": "object"' in plan.guide.source


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"tool_choice": "auto"}, "tool_choice", "only allowed when 'tools'"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}}, "tool_choice", "'x'"),
        ({"tools": [TOOLS[0], TOOLS[0]]}, "tools", "more than once"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools",
            "object",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"d": "x" * MAX_SCHEMA_BYTES}}}]},
            "tools",
            "bytes",
        ),
    ],
)
def test_inconsistent_fields_are_400s(fields: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan_request(request(**fields))
    assert caught.value.param == param
    assert message in caught.value.message


def test_earlier_calls_and_tool_results_reach_the_worker() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    body = request(
        messages=[
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
        ]
    )
    _, assistant, tool = worker_messages(body)
    assert assistant.content == "" and assistant.tool_calls is not None
    assert (assistant.tool_calls[0].id, assistant.tool_calls[0].name, assistant.tool_calls[0].arguments) == (
        "call_1",
        "get_time",
        "{}",
    )
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "noon")
