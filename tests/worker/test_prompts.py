"""Prompt preparation: default max_tokens, the context-window check, the sampling mapping."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tokenyard.errors import ContextLengthExceededError, InvalidRequestError
from tokenyard.protocol.internal import ChatMessage, GenerateRequest
from tokenyard.protocol.sampling import SamplingParams
from tokenyard.worker.prompts import prepare


class WordTokenizer:
    """One token per whitespace-separated word; chat adds two tokens per message."""

    def encode_chat(self, messages: Sequence[ChatMessage], tools: object = None) -> list[int]:
        return [t for m in messages for t in [0, *self.encode_text(m.content), 1]]

    def encode_text(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]


def request(**fields: object) -> GenerateRequest:
    return GenerateRequest(request_id="r", model="m", **fields)  # type: ignore[arg-type]


def test_default_max_tokens_fills_the_context() -> None:
    prepared = prepare(request(prompt="a b c"), WordTokenizer(), context_length=10)
    assert prepared.prompt_token_ids == [1, 1, 1]
    assert prepared.params.max_tokens == 7


def test_chat_messages_use_the_chat_encoding() -> None:
    prepared = prepare(request(messages=[ChatMessage(role="user", content="hi there")]), WordTokenizer(), 10)
    assert prepared.prompt_token_ids == [0, 2, 5, 1]


def test_prompt_plus_max_tokens_over_context_names_both_numbers() -> None:
    sampling = SamplingParams(max_tokens=8)
    with pytest.raises(ContextLengthExceededError) as caught:
        prepare(
            request(prompt="a b c", sampling=sampling, max_tokens_param="max_completion_tokens"), WordTokenizer(), 10
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "max_completion_tokens"
    assert "10 tokens" in caught.value.message and "3 in the prompt" in caught.value.message


def test_prompt_filling_the_whole_context_blames_the_prompt() -> None:
    with pytest.raises(ContextLengthExceededError) as caught:
        prepare(request(prompt="a " * 10), WordTokenizer(), 10)
    assert caught.value.param == "prompt"


def test_sampling_params_are_carried_over() -> None:
    sampling = SamplingParams(max_tokens=2, temperature=0, top_p=0.5, top_k=3, seed=9, stop=("x",), ignore_eos=True)
    params = prepare(request(prompt_token_ids=[4, 5], sampling=sampling), WordTokenizer(), 10).params
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0, 0.5, 3, 9)
    assert params.stop == ("x",) and params.ignore_eos


def test_empty_prompt_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        prepare(request(prompt=""), WordTokenizer(), 10)
    with pytest.raises(InvalidRequestError):
        prepare(request(), WordTokenizer(), 10)


class DecodingWordTokenizer(WordTokenizer):
    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join("x" * t for t in token_ids)


def test_echo_sends_back_the_prompt_as_written_or_decoded() -> None:
    tokenizer = DecodingWordTokenizer()
    assert prepare(request(prompt="ab c", echo=True), tokenizer, 10).prompt_text == "ab c"
    assert prepare(request(prompt_token_ids=[2, 1], echo=True), tokenizer, 10).prompt_text == "xx x"
    assert prepare(request(prompt="ab c"), tokenizer, 10).prompt_text is None


def test_a_resumed_stream_asks_for_no_prompt_echo_or_logprobs() -> None:
    sampling = SamplingParams(max_tokens=5, logprobs=1, prompt_logprobs=1)
    fresh = prepare(request(prompt="a b", echo=True, sampling=sampling), DecodingWordTokenizer(), 10)
    assert fresh.params.prompt_logprobs == 1 and fresh.params.logprobs == 1
    resumed = prepare(
        request(prompt="a b", echo=True, sampling=sampling, resume={"token_ids": [3], "text_sent": ""}),
        DecodingWordTokenizer(),
        10,
    )
    assert resumed.params.prompt_logprobs is None and resumed.prompt_text is None
    assert resumed.params.logprobs == 1
