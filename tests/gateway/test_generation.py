"""OpenAI's sampling fields as the worker's SamplingOptions."""

from __future__ import annotations

import pytest

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.generation import logit_bias, sampling_options
from tokenyard.protocol.openai import ChatCompletionRequest


def test_defaults_follow_openai() -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    options = sampling_options(body, None, 0)
    assert (options.temperature, options.top_p, options.top_k) == (1.0, 1.0, 0)
    assert (options.presence_penalty, options.repetition_penalty, options.logit_bias) == (0.0, 1.0, {})


def test_penalties_bias_and_seed_per_choice() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "seed": 5,
            "presence_penalty": 1.5,
            "frequency_penalty": -0.5,
            "logit_bias": {"7": -100, "9": 2.5},
            "min_p": 0.1,
            "min_tokens": 3,
        }
    )
    options = sampling_options(body, 8, 2)
    assert options.seed == 7
    assert (options.presence_penalty, options.frequency_penalty) == (1.5, -0.5)
    assert options.logit_bias == {7: -100, 9: 2.5}
    assert (options.min_p, options.min_tokens, options.max_tokens) == (0.1, 3, 8)


@pytest.mark.parametrize("bad", [{"x": 1.0}, {"1": 101.0}, {"1": -100.5}])
def test_bad_logit_bias_names_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        logit_bias(bad)
    assert caught.value.param == "logit_bias"
