"""The sampling fields the gateway sends reach the engine's SamplingParams unchanged."""

from __future__ import annotations

from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.sampling import SamplingParams
from tokenyard.worker.prompts import prepare


class ByteTokenizer:
    def encode_chat(self, messages: object, tools: object = None) -> list[int]:
        raise AssertionError("not used")

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode())


def test_penalties_bias_min_tokens_and_logprobs_are_carried_over() -> None:
    sampling = SamplingParams(
        max_tokens=4,
        min_p=0.1,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        repetition_penalty=1.2,
        logit_bias=((3, 2.0), (7, -100.0)),
        min_tokens=2,
        logprobs=3,
    )
    request = GenerateRequest(request_id="r", model="m", prompt="hi", sampling=sampling)
    params = prepare(request, ByteTokenizer(), context_length=100).params  # type: ignore[arg-type]
    assert (params.min_p, params.presence_penalty, params.frequency_penalty) == (0.1, 0.5, 0.25)
    assert (params.repetition_penalty, params.min_tokens, params.logprobs) == (1.2, 2, 3)
    assert params.logit_bias == ((3, 2.0), (7, -100.0))


def test_defaults_change_nothing() -> None:
    params = prepare(GenerateRequest(request_id="r", model="m", prompt="hi"), ByteTokenizer(), 100).params  # type: ignore[arg-type]
    assert not params.needs_logit_processing and params.logprobs is None
