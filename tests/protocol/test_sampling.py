"""SamplingParams on the wire between gateway and worker: a faithful round trip, bounds checked there."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.sampling import Guide, SamplingParams


def test_every_field_survives_the_trip_to_the_worker() -> None:
    sampling = SamplingParams(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=4,
        seed=3,
        stop=("end",),
        stop_token_ids=(2,),
        ignore_eos=True,
        min_p=0.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logit_bias=((3, -1.0), (9, 2.5)),
        min_tokens=1,
        logprobs=2,
        prompt_logprobs=0,
        guide=Guide("lark", "start: /a+/", param="tools"),
    )
    request = GenerateRequest(request_id="r", model="m", prompt="p", sampling=sampling)
    assert GenerateRequest.model_validate_json(request.model_dump_json()).sampling == sampling


def test_a_request_without_sampling_changes_nothing() -> None:
    sampling = GenerateRequest.model_validate_json('{"request_id": "r", "model": "m", "prompt": "p"}').sampling
    assert sampling == SamplingParams() and sampling.max_tokens is None and not sampling.needs_logit_processing


@pytest.mark.parametrize(
    "field",
    [
        {"max_tokens": 0},
        {"temperature": -0.1},
        {"top_p": 0},
        {"min_p": 1.5},
        {"presence_penalty": 3},
        {"repetition_penalty": 0},
        {"logprobs": 21},
        {"guide": {"kind": "regex", "source": "a"}},
    ],
)
def test_values_out_of_bounds_are_refused_where_they_arrive(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate({"request_id": "r", "model": "m", "prompt": "p", "sampling": field})
