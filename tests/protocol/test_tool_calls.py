"""The tool-call text format: grammar text, and the parser that reads calls whole or as a stream."""

from __future__ import annotations

import json

import pytest

from tokenyard.protocol.tool_calls import (
    FunctionSpec,
    ToolCallDelta,
    ToolCallParser,
    call_prefix,
    format_call,
    merge_deltas,
    tool_call_grammar,
)

ARGS = '{"city": "Pa\\"ris {x}", "days": [1, 2], "opts": {"a": "}"}}'
TWO_CALLS = format_call("get_weather", ARGS) + "\n" + format_call("noop", "{}")


def stream(parser: ToolCallParser, text: str, step: int) -> tuple[str, list[ToolCallDelta]]:
    content, deltas = "", []
    for start in range(0, len(text), step):
        more, new = parser.feed(text[start : start + step])
        content += more
        deltas += new
    return content, deltas


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_streamed_pieces_reassemble_to_the_whole_calls(step: int) -> None:
    content, deltas = stream(ToolCallParser("required"), TWO_CALLS, step)
    assert content == ""
    assert merge_deltas(deltas) == [("get_weather", ARGS), ("noop", "{}")]
    assert json.loads(ARGS)["opts"] == {"a": "}"}


def test_the_first_piece_of_a_call_carries_its_name_and_later_ones_arguments() -> None:
    _, deltas = stream(ToolCallParser("required"), format_call("f", '{"a": 1}'), 3)
    assert deltas[0] == ToolCallDelta(0, name="f", arguments="")
    assert all(d.name is None and d.arguments for d in deltas[1:])
    assert "".join(d.arguments for d in deltas) == '{"a": 1}'


def test_auto_mode_passes_plain_text_through() -> None:
    parser = ToolCallParser("auto")
    assert parser.feed("") == ("", [])
    assert parser.feed("Hello <b>") == ("Hello <b>", [])
    assert parser.feed(" world") == (" world", [])
    assert parser.num_calls == 0


def test_auto_mode_reads_a_call_when_the_text_starts_with_one() -> None:
    parser = ToolCallParser("auto")
    content, _ = stream(parser, TWO_CALLS, 5)
    assert content == ""
    assert parser.num_calls == 2


def test_a_call_cut_short_keeps_what_arrived() -> None:
    text = call_prefix("f") + '{"a": "lon'
    _, deltas = ToolCallParser("required").feed(text)
    assert merge_deltas(deltas) == [("f", '{"a": "lon')]


def test_grammar_lists_each_function_with_its_schema() -> None:
    functions = [FunctionSpec("a", {"type": "object"}, strict=True), FunctionSpec("b", {"type": "object"})]
    grammar = tool_call_grammar(functions, mode="auto", parallel=True)
    assert grammar.startswith("start: answer | calls\ncalls: call (")
    assert "call: call_0 | call_1" in grammar
    assert '"lenient": false' in grammar and '"lenient": true' in grammar
    assert "answer: /[^<]" in grammar
    assert 'answer: %json {"type": "array"' in tool_call_grammar(
        functions, mode="auto", parallel=True, answer=({"type": "array"}, True)
    )
    assert "calls: call\n" in tool_call_grammar(functions, mode="required", parallel=False)
