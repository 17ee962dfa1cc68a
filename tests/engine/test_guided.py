"""Constrained decoding on the tiny model's tokenizer: masks allow only valid continuations, random
sampling under the mask ends in valid output, bad schemas are 400s, compiled guides are cached."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from transformers import AutoTokenizer

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.guided import Guide, GuideCompiler, GuideMatcher, mask_guided_rows, unpack_bitmask
from tokenyard.engine.sampling import make_generator, sample_batch
from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.tool_calls import FunctionSpec, ToolCallParser, merge_deltas, tool_call_grammar

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "alerts": {"type": "boolean"},
    },
    "required": ["unit", "days", "alerts"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def hf(tiny_chat_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_chat_model_dir)


@pytest.fixture(scope="module")
def compiler(hf: Any) -> GuideCompiler:
    return GuideCompiler(hf, vocab_size=len(hf), eos_token_ids={hf.eos_token_id})


def allowed_tokens(matcher: GuideMatcher, vocab_size: int) -> list[int]:
    bitmask = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)
    matcher.fill_bitmask(bitmask[0])
    return unpack_bitmask(bitmask, vocab_size)[0].nonzero().flatten().tolist()


def sample_until_done(matcher: GuideMatcher, hf: Any, seed: int, max_steps: int = 400) -> str:
    """Random logits, masked, sampled: what a random-weight model does under the guide."""
    generator = torch.Generator().manual_seed(seed)
    tokens: list[int] = []
    for _ in range(max_steps):
        logits = mask_guided_rows(torch.randn(1, len(hf), generator=generator), [matcher])
        token = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=generator))
        if token == hf.eos_token_id:
            break
        tokens.append(token)
        if matcher.advance(token):
            break
    else:
        pytest.fail("the guide never completed")
    return str(hf.decode(tokens))


def test_the_first_token_of_a_json_guide_opens_an_object(compiler: GuideCompiler, hf: Any) -> None:
    matcher = compiler.matcher(Guide("json_schema", json.dumps(SCHEMA)))
    allowed = allowed_tokens(matcher, len(hf))
    assert allowed
    assert all(hf.decode([token]).startswith("{") for token in allowed)
    assert hf.eos_token_id not in allowed, "EOS is allowed only where the grammar accepts"


@pytest.mark.parametrize("seed", range(5))
def test_random_sampling_under_the_mask_gives_schema_valid_json(compiler: GuideCompiler, hf: Any, seed: int) -> None:
    text = sample_until_done(compiler.matcher(Guide("json_schema", json.dumps(SCHEMA))), hf, seed)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_masking_leaves_unguided_rows_and_the_input_alone(compiler: GuideCompiler, hf: Any) -> None:
    logits = torch.randn(2, len(hf))
    original = logits.clone()
    masked = mask_guided_rows(logits, [None, compiler.matcher(Guide("json_schema", '{"type": "object"}'))])
    assert torch.equal(logits, original)
    assert torch.equal(masked[0], original[0])
    assert torch.isinf(masked[1]).sum() > 0
    assert mask_guided_rows(logits, [None, None]) is logits


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{"type": "foo"}', "Invalid type"),
        ('{"type": "string", "pattern": "(("}', "regex"),
        ('{"$ref": "#/nowhere"}', "nowhere"),
        ("[1, 2", "Invalid JSON schema"),
    ],
)
def test_an_invalid_schema_is_a_400_naming_the_field(compiler: GuideCompiler, source: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        compiler.matcher(Guide("json_schema", source, param="tools"))
    assert caught.value.param == "tools"
    assert message in caught.value.message


def test_strict_refuses_what_it_cannot_enforce_and_non_strict_ignores_it(compiler: GuideCompiler) -> None:
    schema = json.dumps({"type": "object", "not": {"required": ["a"]}})
    with pytest.raises(InvalidRequestError, match="not"):
        compiler.matcher(Guide("json_schema", schema, strict=True))
    compiler.matcher(Guide("json_schema", schema, strict=False))


def test_a_guide_is_compiled_once_and_matchers_are_independent(hf: Any) -> None:
    compiler = GuideCompiler(hf, vocab_size=len(hf), eos_token_ids={hf.eos_token_id})
    guide = Guide("json_schema", json.dumps(SCHEMA))
    first, second = compiler.matcher(guide), compiler.matcher(guide)
    assert len(compiler._compiled) == 1
    first.advance(hf.encode("{")[0])
    assert allowed_tokens(first, len(hf)) != allowed_tokens(second, len(hf))


def test_generated_tokens_are_consumed_before_a_resumed_request_continues(compiler: GuideCompiler, hf: Any) -> None:
    prefix = hf.encode('{"unit": "celsius", "days": ', add_special_tokens=False)
    matcher = compiler.matcher(Guide("json_schema", json.dumps(SCHEMA), generated=tuple(prefix)))
    assert all(hf.decode([t])[0] in "1234567" for t in allowed_tokens(matcher, len(hf)))


@pytest.mark.parametrize("seed", range(3))
def test_a_forced_tool_call_parses_and_its_arguments_match(compiler: GuideCompiler, hf: Any, seed: int) -> None:
    functions = [FunctionSpec("get_weather", SCHEMA, strict=True), FunctionSpec("noop", {"type": "object"})]
    grammar = tool_call_grammar(functions[:1], mode="required", parallel=False)
    text = sample_until_done(compiler.matcher(Guide("lark", grammar, param="tools")), hf, seed)
    parser = ToolCallParser("required")
    content, deltas = parser.feed(text)
    assert content == ""
    [(name, arguments)] = merge_deltas(deltas)
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), SCHEMA)


def test_auto_mode_lets_the_model_answer_in_text(compiler: GuideCompiler, hf: Any) -> None:
    grammar = tool_call_grammar([FunctionSpec("get_weather", SCHEMA)], mode="auto", parallel=True)
    matcher = compiler.matcher(Guide("lark", grammar, param="tools"))
    allowed = {hf.decode([t]) for t in allowed_tokens(matcher, len(hf))}
    assert "<" in allowed
    assert any(text[:1].isalpha() for text in allowed)
    assert not any(text.startswith("<") and text != "<" for text in allowed)


def test_a_refused_token_stops_the_matcher_and_leaves_only_eos(compiler: GuideCompiler, hf: Any) -> None:
    """The mask never offers such a token; should one come anyway, the request ends rather than fails."""
    matcher = compiler.matcher(Guide("json_schema", json.dumps(SCHEMA)))
    assert matcher.advance(hf.encode("x", add_special_tokens=False)[0])
    assert matcher.error
    assert allowed_tokens(matcher, len(hf)) == [hf.eos_token_id]


@dataclass
class GuidedRow:
    params: SamplingParams
    guide: GuideMatcher
    prompt_token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    eos_token_ids: tuple[int, ...] = ()


@pytest.mark.parametrize("penalty", [1e-300, 1e-30, 1e30, 1e300])
@pytest.mark.parametrize(("low", "high"), [(-2.0, 2.0), (-3.0, -1.01)])
def test_extreme_repetition_penalties_keep_the_mask_and_a_valid_draw(
    compiler: GuideCompiler, hf: Any, penalty: float, low: float, high: float
) -> None:
    """A penalty beyond float32 (valid input) once turned masked -inf logits into NaN: a 500. With every
    logit below -1, a huge penalty once overflowed every allowed token to -inf as well."""
    matcher = compiler.matcher(Guide("json_schema", json.dumps(SCHEMA)))
    params = SamplingParams(max_tokens=4, temperature=1, repetition_penalty=penalty)
    row = GuidedRow(params, matcher, prompt_token_ids=list(range(len(hf))))  # every token "seen"
    logits = low + (high - low) * torch.rand(1, len(hf), generator=torch.Generator().manual_seed(3))
    tokens, _ = sample_batch(logits, [row], [make_generator(0, torch.device("cpu"))])
    assert tokens[0] in allowed_tokens(matcher, len(hf))
