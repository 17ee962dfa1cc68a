"""OpenAI requests as worker requests: the one SamplingParams per choice, built with OpenAI's defaults."""

from __future__ import annotations

import pytest

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.request_mapping import (
    chat_requests,
    completion_requests,
    logit_bias,
    refuse_unsupported,
    requested_logprobs,
    sampling_params,
    split_prompts,
)
from tokenyard.gateway.structured import plan_request
from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.openai import ChatCompletionRequest, CompletionRequest
from tokenyard.protocol.sampling import SamplingParams

USER = [{"role": "user", "content": "x"}]


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})


def completion(**fields: object) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", **fields})


def test_defaults_follow_openai() -> None:
    params = sampling_params(chat(), None, 0)
    assert (params.temperature, params.top_p, params.top_k) == (1.0, 1.0, 0)
    assert (params.presence_penalty, params.repetition_penalty, params.logit_bias) == (0.0, 1.0, ())
    assert params == SamplingParams()  # OpenAI's defaults are the engine's: nothing changes the logits


def test_penalties_bias_and_seed_per_choice() -> None:
    body = chat(
        seed=5,
        presence_penalty=1.5,
        frequency_penalty=-0.5,
        logit_bias={"9": 2.5, "7": -100},
        min_p=0.1,
        min_tokens=3,
        stop=["a", ""],
        top_k=-1,
    )
    params = sampling_params(body, 8, 2)
    assert params.seed == 7
    assert (params.presence_penalty, params.frequency_penalty) == (1.5, -0.5)
    assert params.logit_bias == ((7, -100), (9, 2.5))  # sorted by token id
    assert (params.min_p, params.min_tokens, params.max_tokens) == (0.1, 3, 8)
    assert params.stop == ("a",) and params.top_k == 0


@pytest.mark.parametrize("bad", [{"x": 1.0}, {"1": 101.0}, {"1": -100.5}])
def test_bad_logit_bias_names_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        logit_bias(bad)
    assert caught.value.param == "logit_bias"


def test_chat_fans_out_one_request_per_choice_with_its_own_seed() -> None:
    body = chat(n=3, seed=10, max_completion_tokens=5, logprobs=True, top_logprobs=2)
    requests = chat_requests(body, "chatcmpl-1", plan_request(body), requested_logprobs(body), "acme")
    assert [r.request_id for r in requests] == ["chatcmpl-1-0", "chatcmpl-1-1", "chatcmpl-1-2"]
    assert [r.sampling.seed for r in requests] == [10, 11, 12]
    assert {(r.sampling.max_tokens, r.sampling.logprobs, r.max_tokens_param, r.tenant) for r in requests} == {
        (5, 2, "max_completion_tokens", "acme")
    }
    assert all(r.messages and r.messages[0].content == "x" for r in requests)


def test_chat_response_format_travels_as_the_guide() -> None:
    body = chat(response_format={"type": "json_object"})
    (request,) = chat_requests(body, "c", plan_request(body), None, None)
    assert request.sampling.guide is not None and request.sampling.guide.kind == "json_schema"


def test_top_logprobs_without_logprobs_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        requested_logprobs(chat(top_logprobs=2))
    assert caught.value.param == "top_logprobs"


def test_completions_group_candidates_by_prompt() -> None:
    body = completion(prompt=["a", "b"], n=1, best_of=2, echo=True, logprobs=1)
    requests = completion_requests(body, split_prompts(body.prompt), "cmpl-1", 2, None)
    assert [(r.request_id, r.prompt) for r in requests] == [
        ("cmpl-1-0-0", "a"),
        ("cmpl-1-0-1", "a"),
        ("cmpl-1-1-0", "b"),
        ("cmpl-1-1-1", "b"),
    ]
    assert all(r.echo and r.sampling.prompt_logprobs == 1 and r.sampling.logprobs == 1 for r in requests)


def test_ranking_candidates_asks_for_logprobs_and_max_tokens_0_generates_one() -> None:
    body = completion(prompt=[1, 2], n=1, best_of=3, max_tokens=0, echo=True)
    requests = completion_requests(body, split_prompts(body.prompt), "c", 3, None)
    assert [r.prompt_token_ids for r in requests] == [[1, 2]] * 3
    assert {(r.sampling.logprobs, r.sampling.max_tokens, r.sampling.prompt_logprobs) for r in requests} == {
        (0, 1, None)
    }


def test_requests_survive_the_wire_unchanged() -> None:
    body = chat(logit_bias={"3": 1.0}, stop="end", response_format={"type": "json_object"})
    (request,) = chat_requests(body, "c", plan_request(body), None, None)
    assert GenerateRequest.model_validate_json(request.model_dump_json()) == request


def test_unsupported_fields_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        refuse_unsupported(completion(prompt="a", suffix="b"))
    assert caught.value.param == "suffix"
