"""A tool-mode answer read back as OpenAI's tool_calls: whole, and as streamed deltas."""

from __future__ import annotations

from tokenyard.gateway.tool_output import ToolCallStream, tool_message, without_nulls
from tokenyard.protocol.openai import ChatDelta
from tokenyard.protocol.tool_calls import format_call

CALLS = format_call("get_weather", '{"city": "Paris"}') + "\n" + format_call("get_time", "{}")


def streamed(text: str, mode: str = "required", step: int = 4) -> list[ChatDelta]:
    stream = ToolCallStream(mode)  # type: ignore[arg-type]
    return [delta for i in range(0, len(text), step) for delta in stream.deltas(text[i : i + step])]


def test_deltas_follow_openai_first_a_header_then_argument_fragments() -> None:
    deltas = streamed(CALLS)
    pieces = [call for delta in deltas for call in delta.tool_calls or []]
    headers = [p for p in pieces if p.id is not None]
    assert [(h.index, h.type, h.function and h.function.name) for h in headers] == [
        (0, "function", "get_weather"),
        (1, "function", "get_time"),
    ]
    assert all(h.id and h.id.startswith("call_") and h.function and h.function.arguments == "" for h in headers)
    assert headers[0].id != headers[1].id
    arguments = ["".join(p.function.arguments or "" for p in pieces if p.index == i and p.id is None and p.function)
                 for i in (0, 1)]  # fmt: skip
    assert arguments == ['{"city": "Paris"}', "{}"]
    assert all(delta.content is None for delta in deltas)


def test_the_whole_message_has_the_same_calls_and_no_content() -> None:
    message, reason = tool_message(CALLS, "stop", "required")
    assert message.content is None and reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", "{}"),
    ]


def test_a_call_cut_by_the_budget_keeps_length() -> None:
    message, reason = tool_message(CALLS[:60], "length", "required")
    assert reason == "length" and message.tool_calls and len(message.tool_calls) == 1


def test_auto_mode_text_is_content() -> None:
    deltas = streamed("Sunny, 21 degrees.", mode="auto")
    assert "".join(d.content or "" for d in deltas) == "Sunny, 21 degrees."
    message, reason = tool_message("Sunny.", "stop", "auto")
    assert (message.content, message.tool_calls, reason) == ("Sunny.", None, "stop")


def test_a_header_is_a_chunk_of_its_own_and_nulls_are_dropped() -> None:
    header, fragment = streamed(format_call("f", "{}")[:40], step=40)
    call_id = header.tool_calls[0].id  # type: ignore[index]
    assert without_nulls(header.model_dump()) == {
        "tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": "f", "arguments": ""}}]
    }
    assert without_nulls(fragment.model_dump()) == {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}
