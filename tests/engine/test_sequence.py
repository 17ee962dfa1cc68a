"""Sequence: when a request stops and what text it streams, with a one-byte-per-token 'tokenizer'."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import pytest

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.sequence import Sequence, validate_request
from tokenyard.errors import ContextLengthExceededError, InvalidRequestError

EOS = 0  # byte 0 plays the end-of-sequence token


def decode(ids: Seq[int]) -> str:
    return bytes(i for i in ids if i != EOS).decode("utf-8", errors="replace")


def make(params: SamplingParams, context_length: int = 1000) -> Sequence:
    return Sequence("r", list(b"prompt: "), params, decode=decode, eos_token_ids={EOS}, context_length=context_length)


def feed(sequence: Sequence, data: bytes) -> tuple[str, str | None]:
    """Append tokens until the sequence finishes; return the streamed text and the finish reason."""
    text = ""
    for token in data:
        output = sequence.append_token(token)
        text += output.text
        if output.finish_reason is not None:
            return text, output.finish_reason
    return text, None


def test_eos_stops_and_is_not_part_of_the_text() -> None:
    sequence = make(SamplingParams(max_tokens=50))
    assert feed(sequence, "中文 ok".encode() + bytes([EOS]) + b"more") == ("中文 ok", "stop")
    assert len(sequence.output_token_ids) == len("中文 ok".encode()) + 1


def test_ignore_eos_keeps_going_until_max_tokens() -> None:
    sequence = make(SamplingParams(max_tokens=6, ignore_eos=True))
    assert feed(sequence, b"ab" + bytes([EOS]) + b"cdefg") == ("abcde", "length")  # 6 tokens, EOS included


def test_stop_token_id_stops_without_its_text() -> None:
    sequence = make(SamplingParams(max_tokens=50, stop_token_ids=(ord("!"),)))
    assert feed(sequence, b"hello! world") == ("hello", "stop")


def test_stop_string_across_tokens_is_never_streamed() -> None:
    sequence = make(SamplingParams(max_tokens=50, stop=("\nUser:",)))
    outputs = [sequence.append_token(t) for t in b"Sure.\nUser:"]
    assert [o.text for o in outputs if o.text] == ["S", "u", "r", "e", "."]
    assert outputs[-1].finish_reason == "stop"


def test_max_tokens_flushes_a_held_back_tail() -> None:
    sequence = make(SamplingParams(max_tokens=4, stop=("xyz",)))
    assert feed(sequence, b"abxy") == ("abxy", "length")


def test_stop_string_completed_by_the_last_allowed_token_is_a_stop() -> None:
    sequence = make(SamplingParams(max_tokens=4, stop=("xy",)))
    assert feed(sequence, b"abxy") == ("ab", "stop")


def test_context_length_ends_the_sequence() -> None:
    sequence = make(SamplingParams(max_tokens=100), context_length=len(b"prompt: ") + 3)
    assert feed(sequence, b"abcdef") == ("abc", "length")


def test_counts_in_outputs() -> None:
    output = make(SamplingParams(max_tokens=5)).append_token(ord("a"))
    assert (output.num_new_tokens, output.num_prompt_tokens, output.num_output_tokens) == (1, 8, 1)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "error"),
    [
        ([], 5, InvalidRequestError),
        ([1, 2], 0, InvalidRequestError),
        ([1, 500], 5, InvalidRequestError),
        ([1, 2, 3], 8, ContextLengthExceededError),
    ],
)
def test_validate_request_refusals(prompt: list[int], max_tokens: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_request(prompt, SamplingParams(max_tokens=max_tokens), vocab_size=256, context_length=10)


def test_no_max_tokens_generates_until_the_context_is_full() -> None:
    sequence = make(SamplingParams(), context_length=len(b"prompt: ") + 3)
    assert feed(sequence, b"abcdef") == ("abc", "length")
    validate_request([1, 2, 3], SamplingParams(), vocab_size=256, context_length=4)
    with pytest.raises(ContextLengthExceededError):
        validate_request([1, 2, 3, 4], SamplingParams(), vocab_size=256, context_length=4)


def test_validate_request_accepts_a_request_that_just_fits() -> None:
    validate_request([1, 2, 3], SamplingParams(max_tokens=7), vocab_size=256, context_length=10)


def test_logit_bias_outside_the_vocabulary_is_refused() -> None:
    params = SamplingParams(max_tokens=2, logit_bias=((300, 5.0),))
    with pytest.raises(InvalidRequestError) as caught:
        validate_request([1, 2], params, vocab_size=256, context_length=10)
    assert caught.value.param == "logit_bias"


def test_stop_token_ids_outside_the_vocabulary_are_refused() -> None:
    # With min_tokens they index the logits; out of range they must be a 400, not a crash.
    params = SamplingParams(max_tokens=2, stop_token_ids=(-1,), min_tokens=1)
    with pytest.raises(InvalidRequestError) as caught:
        validate_request([1, 2], params, vocab_size=256, context_length=10)
    assert caught.value.param == "stop_token_ids"
