"""JSON mode, JSON schemas and tool calls with the official `openai` client against a real cluster.

The tiny chat model has random weights, so whatever it says is noise: that its answers still parse
and validate shows the constraint, not the model, doing the work. The schemas bound their values
(enums, integer ranges, short strings) so that a random walk through them ends within the budget.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import CHAT_MODEL

MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER, "strict": True},
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]
FORCED: Any = {"type": "function", "function": {"name": "get_weather"}}
BUDGET = 200


def test_json_object_output_parses(client: OpenAI) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=MESSAGES,
            response_format={"type": "json_object"},
            max_tokens=BUDGET,
            seed=seed,
        )
        choice = reply.choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content or ""), dict)
        else:  # a random model may wander through long strings: cut by the budget, as OpenAI's
            assert choice.finish_reason == "length"
            assert (choice.message.content or "").startswith("{")


def test_json_schema_output_validates(client: OpenAI) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": WEATHER, "strict": True},
    }
    for seed in range(3):
        reply = client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, response_format=response_format, max_tokens=BUDGET, seed=seed
        )
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), WEATHER)


def test_a_budget_that_ends_inside_the_json_gives_length(client: OpenAI) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, response_format=response_format, max_tokens=2, temperature=0
    )
    assert reply.choices[0].finish_reason == "length"
    assert (reply.choices[0].message.content or "").startswith("{")
    assert reply.usage is not None and reply.usage.completion_tokens == 2


def test_a_forced_tool_call_parses_and_matches_its_schema(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=FORCED, max_tokens=BUDGET, seed=1
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)


def test_required_gives_tool_calls(client: OpenAI) -> None:
    for parallel in (False, True):
        reply = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=MESSAGES,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=parallel,
            max_tokens=BUDGET,
            seed=2,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert len(calls) == 1 if not parallel else len(calls) >= 1
        for call in calls:
            assert call.function.name in {"get_weather", "get_time"}
            schema = WEATHER if call.function.name == "get_weather" else {"type": "object", "maxProperties": 0}
            jsonschema.validate(json.loads(call.function.arguments), schema)


def test_auto_answers_in_text_or_with_calls(client: OpenAI) -> None:
    for seed in range(4):
        reply = client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, tools=TOOLS, max_tokens=40, seed=seed
        )
        choice = reply.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason in ("tool_calls", "length")
        else:
            assert choice.finish_reason in ("stop", "length")
            assert not (choice.message.content or "").startswith("<")


def test_streamed_tool_calls_reassemble_to_the_whole_answer(client: OpenAI) -> None:
    kwargs: Any = {"model": CHAT_MODEL, "messages": MESSAGES, "tools": TOOLS, "tool_choice": FORCED}
    whole = client.chat.completions.create(**kwargs, max_tokens=BUDGET, temperature=0)
    chunks = list(client.chat.completions.create(**kwargs, max_tokens=BUDGET, temperature=0, stream=True))
    pieces = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    first, rest = pieces[0], pieces[1:]
    assert first.index == 0 and first.id and first.id.startswith("call_") and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather" and first.function.arguments == ""
    assert rest and all(p.id is None and p.function is not None and p.function.name is None for p in rest)
    streamed = "".join(p.function.arguments or "" for p in rest if p.function is not None)
    [call] = whole.choices[0].message.tool_calls or []
    assert streamed == call.function.arguments
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


async def test_async_stream_of_a_required_call(async_client: AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        tools=TOOLS[:1],
        tool_choice="required",
        max_tokens=BUDGET,
        seed=3,
        stream=True,
    )
    arguments: dict[int, str] = {}  # parallel calls (the default) arrive one after another, by index
    finishes = []
    async for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]
        finishes += [choice.finish_reason for choice in chunk.choices if choice.finish_reason]
    assert arguments and sorted(arguments) == list(range(len(arguments)))
    # Random weights may keep adding calls until the budget ends: the last one is then cut.
    complete = list(arguments.values()) if finishes == ["tool_calls"] else list(arguments.values())[:-1]
    assert finishes in (["tool_calls"], ["length"])
    for text in complete:
        jsonschema.validate(json.loads(text), WEATHER)


def test_a_follow_up_turn_with_the_tool_result_is_accepted(client: OpenAI) -> None:
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=FORCED, max_tokens=BUDGET, temperature=0
    )
    [call] = first.choices[0].message.tool_calls or []
    conversation: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=conversation, tools=TOOLS, max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage is not None and reply.usage.prompt_tokens > first.usage.prompt_tokens  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}},
            "response_format",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"pattern": "(("}}}},
            "response_format",
        ),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/no"}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
)
def test_invalid_structured_requests_are_400s_naming_the_field(
    client: OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=4, **fields)
    assert caught.value.status_code == 400
    assert caught.value.param is not None and caught.value.param.startswith(param)
