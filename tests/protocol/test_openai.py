"""OpenAI request schemas: accepted shapes, refused values, neutral values of unsupported fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokenyard.protocol.openai import (
    ChatCompletionRequest,
    ChatMessageParam,
    CompletionRequest,
    EmbeddingRequest,
    unsupported_fields,
)


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_content_parts_are_joined() -> None:
    message = ChatMessageParam.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "你好"}, {"type": "text", "text": " world"}]}
    )
    assert message.text() == "你好 world"


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        chat(frobnicate=1)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("fields", [{"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"n": 0}])
def test_out_of_range_values_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        chat(**fields)


def test_stop_accepts_a_string_or_up_to_four() -> None:
    assert chat(stop="x").stop_list() == ["x"]
    assert chat(stop=["a", "b"]).stop_list() == ["a", "b"]
    with pytest.raises(ValidationError):
        chat(stop=["a", "b", "c", "d", "e"])


def test_neutral_values_of_unsupported_fields_pass() -> None:
    request = chat(logprobs=False, presence_penalty=0, tool_choice="none", response_format={"type": "text"})
    assert unsupported_fields(request) == []


def test_unsupported_values_are_named() -> None:
    assert unsupported_fields(CompletionRequest(model="m", prompt="x", suffix="end")) == ["suffix"]


def test_logprobs_echo_and_best_of_are_honoured() -> None:
    assert unsupported_fields(chat(logprobs=True, top_logprobs=5)) == []
    completion = CompletionRequest(model="m", prompt="x", echo=True, logprobs=3, best_of=3)
    assert unsupported_fields(completion) == []
    with pytest.raises(ValidationError):
        CompletionRequest(model="m", prompt="x", best_of=21)  # OpenAI's cap
    with pytest.raises(ValidationError):
        CompletionRequest(model="m", prompt="x", logprobs=6)


def test_completion_defaults_to_sixteen_tokens_like_openai() -> None:
    assert CompletionRequest(model="m", prompt="x").max_tokens == 16
    assert CompletionRequest(model="m", prompt="x", max_tokens=None).max_tokens is None  # up to the context


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_embedding_input_forms(value: object) -> None:
    assert EmbeddingRequest.model_validate({"model": "m", "input": value}).input == value


@pytest.mark.parametrize(
    "fields", [{"max_tokens": True}, {"max_tokens": "5"}, {"stream": 1}, {"temperature": "0.5"}, {"n": 1.5}]
)
def test_values_are_not_coerced_across_json_types(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        chat(**fields)


def test_integral_numbers_are_integers_as_in_json_schema() -> None:
    request = chat(max_tokens=16.0, n=2.0, temperature=0)
    assert (request.max_tokens, request.n, request.temperature) == (16, 2, 0.0)


def test_token_ids_refuse_booleans() -> None:
    with pytest.raises(ValidationError):
        EmbeddingRequest.model_validate({"model": "m", "input": [True, False]})


def test_seed_is_bounded_like_openai() -> None:
    assert chat(seed=-(2**63)).seed == -(2**63)
    with pytest.raises(ValidationError):
        chat(seed=2**63)


@pytest.mark.parametrize("fields", [{"user": "\ud800"}, {"stop": ["ok", "\udfff"]}, {"logit_bias": {"\ud800": 1.0}}])
def test_unpaired_surrogates_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="Unicode"):
        chat(**fields)


def test_valid_astral_characters_pass() -> None:
    assert chat(user="😀").user == "😀"
