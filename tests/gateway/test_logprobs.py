"""Worker logprob entries in OpenAI's chat and legacy completions shapes, and the completions helpers."""

from __future__ import annotations

import pytest

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.choices import ChoiceResult, usage_of
from tokenyard.gateway.logprobs import TextOffsets, chat_logprobs, completion_logprobs
from tokenyard.gateway.request_mapping import candidates_per_prompt
from tokenyard.gateway.serving_completion import ChoiceText, best_candidates, prompt_only
from tokenyard.protocol.internal import GenerateChunk, LogprobEntry, TokenLogprobs
from tokenyard.protocol.openai import CompletionRequest


def entry(text: str | bytes, logprob: float | None, *alternatives: tuple[str, float]) -> TokenLogprobs:
    raw = text if isinstance(text, bytes) else text.encode()
    token = raw.decode() if isinstance(text, str) else "".join(f"\\x{b:02x}" for b in raw)
    top = [LogprobEntry(token=t, logprob=v, bytes=list(t.encode())) for t, v in alternatives]
    return TokenLogprobs(token=token, logprob=logprob, bytes=list(raw), top_logprobs=top)


# "北" is three bytes split over two tokens, as byte-level BPE splits Chinese.
SPLIT = [entry(b"\xe5\x8c", -0.5, ("x", -1.0)), entry(b"\x97", -0.1), entry(" the", -2.0, (" a", -1.5))]


def test_chat_shape_is_openais() -> None:
    shaped = chat_logprobs(SPLIT).model_dump()
    assert shaped["refusal"] is None
    first = shaped["content"][0]
    assert first == {
        "token": "\\xe5\\x8c",
        "logprob": -0.5,
        "bytes": [0xE5, 0x8C],
        "top_logprobs": [{"token": "x", "logprob": -1.0, "bytes": [120]}],
    }
    assert bytes(b for item in shaped["content"] for b in item["bytes"]).decode() == "北 the"


def test_legacy_shape_offsets_and_byte_tokens() -> None:
    shaped = completion_logprobs(SPLIT, TextOffsets())
    assert shaped.tokens == ["bytes:\\xe5\\x8c", "bytes:\\x97", " the"]
    assert shaped.token_logprobs == [-0.5, -0.1, -2.0]
    # The chosen token is always among top_logprobs, besides the k alternatives.
    assert shaped.top_logprobs == [
        {"x": -1.0, "bytes:\\xe5\\x8c": -0.5},
        {"bytes:\\x97": -0.1},
        {" a": -1.5, " the": -2.0},
    ]
    assert shaped.text_offset == [0, 0, 1]  # both halves of 北 start at its offset


def test_echo_puts_the_prompt_first_with_a_null_first_logprob() -> None:
    body = CompletionRequest(model="m", prompt="Hi there", echo=True, logprobs=1)
    chunk = GenerateChunk(
        text=" you",
        prompt_text="Hi there",
        prompt_logprobs=[entry("Hi", None), entry(" there", -3.0, (" you", -1.0))],
        logprobs=[entry(" you", -0.2)],
    )
    text, logprobs = ChoiceText(body).piece(chunk)
    assert text == "Hi there you"
    assert logprobs is not None
    assert logprobs.tokens == ["Hi", " there", " you"]
    assert logprobs.token_logprobs == [None, -3.0, -0.2] and logprobs.top_logprobs[0] is None
    assert logprobs.text_offset == [0, 2, 8]


def test_streamed_pieces_continue_the_offsets_and_echo_once() -> None:
    body = CompletionRequest(model="m", prompt="ab", echo=True, logprobs=0, stream=True)
    choice = ChoiceText(body)
    first = choice.piece(GenerateChunk(text="c", prompt_text="ab", logprobs=[entry("c", -1.0)]))
    second = choice.piece(GenerateChunk(text="d", logprobs=[entry("d", -1.0)]))
    assert first[0] == "abc" and second[0] == "d"
    assert first[1] is not None and second[1] is not None
    assert first[1].text_offset == [2] and second[1].text_offset == [3]


def test_no_logprobs_object_unless_asked() -> None:
    text, logprobs = ChoiceText(CompletionRequest(model="m", prompt="x")).piece(GenerateChunk(text="y"))
    assert (text, logprobs) == ("y", None)


def result(cumulative: float, tokens: int = 2) -> ChoiceResult:
    logprobs = [entry("a", cumulative / tokens) for _ in range(tokens)]
    return ChoiceResult(text=str(cumulative), prompt_tokens=5, completion_tokens=tokens, logprobs=logprobs)


def test_best_of_picks_the_highest_summed_logprob_per_prompt() -> None:
    # Per-token mean would prefer -1.5 over 4 tokens to -1.0 over 1; the sum prefers -1.0.
    results = [result(-3.0), result(-1.5, tokens=4), result(-1.0, tokens=1), result(-0.5), result(-9.0), result(-2.0)]
    chosen = best_candidates(results, candidates=3, n=1)
    assert [r.text for r in chosen] == ["-1.0", "-0.5"]
    usage = usage_of(results, 3)
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 2 + 4 + 1 + 2 + 2 + 2)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"best_of": 1, "n": 2}, "best_of"),
        ({"best_of": 3, "stream": True}, "best_of"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_completion_combinations_refused(fields: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        candidates_per_prompt(CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields}))
    assert error.value.param == param


def test_best_of_equal_to_n_streams_and_max_tokens_zero_echoes() -> None:
    assert candidates_per_prompt(CompletionRequest(model="m", prompt="x", best_of=2, n=2, stream=True)) == 2
    assert candidates_per_prompt(CompletionRequest(model="m", prompt="x", max_tokens=0, echo=True)) == 1
    dropped = prompt_only(GenerateChunk(text="z", completion_tokens=1, finish_reason="stop", prompt_text="x"))
    assert (dropped.text, dropped.completion_tokens, dropped.finish_reason, dropped.prompt_text) == (
        "",
        0,
        "length",
        "x",
    )


def test_cached_tokens_count_each_prompt_once_at_its_least() -> None:
    choices = [ChoiceResult(prompt_tokens=40, cached_tokens=c) for c in (0, 32, 32, 16)]
    usage = usage_of(choices, 2)  # two prompts, two choices each
    assert usage.prompt_tokens == 80
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 16
