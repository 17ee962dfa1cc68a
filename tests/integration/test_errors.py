"""Bad requests get OpenAI-shaped errors with OpenAI's statuses, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.integration.processes import Cluster

USER = [{"role": "user", "content": "hi"}]


def post(cluster: Cluster, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{cluster.gateway_url}{path}", timeout=30, **kwargs)


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"


def test_invalid_json_is_400(cluster: Cluster) -> None:
    response = post(cluster, "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": CHAT_MODEL}, "messages"),
        ({"model": CHAT_MODEL, "messages": USER, "max_tokens": "many"}, "max_tokens"),
        ({"model": CHAT_MODEL, "messages": "hi"}, "messages"),
        ({"model": CHAT_MODEL, "messages": []}, "messages"),
        ({"model": CHAT_MODEL, "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": CHAT_MODEL, "messages": USER, "temperature": 3}, "temperature"),
        ({"model": CHAT_MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": CHAT_MODEL, "messages": USER, "frobnicate": True}, "frobnicate"),
        ({"model": CHAT_MODEL, "messages": USER, "logit_bias": {"999999": 10}}, "logit_bias"),
        ({"model": CHAT_MODEL, "messages": USER, "logit_bias": {"abc": 10}}, "logit_bias"),
        ({"model": CHAT_MODEL, "messages": USER, "logit_bias": {"5": 500}}, "logit_bias"),
        ({"model": CHAT_MODEL, "messages": USER, "top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ({"model": CHAT_MODEL, "messages": USER, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": CHAT_MODEL, "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_chat_requests_are_400(cluster: Cluster, body: dict[str, Any], param: str) -> None:
    assert_error(post(cluster, "/v1/chat/completions", json=body), 400, param=param)


def test_prompt_longer_than_context(cluster: Cluster) -> None:
    long_prompt = "word " * 3000
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": long_prompt}]}
    assert_error(post(cluster, "/v1/chat/completions", json=body), 400, code="context_length_exceeded")


def test_prompt_plus_max_tokens_over_context(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=USER, max_tokens=100_000)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"
    assert "100000" in caught.value.message or "100,000" in caught.value.message


def test_streamed_request_error_before_first_token_is_a_status(cluster: Cluster) -> None:
    body = {"model": CHAT_MODEL, "messages": USER, "max_tokens": 100_000, "stream": True}
    assert_error(post(cluster, "/v1/chat/completions", json=body), 400, code="context_length_exceeded")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"suffix": "and then"}, "suffix"),  # no infill models
        ({"best_of": 3, "stream": True}, "best_of"),
        ({"best_of": 1, "n": 2}, "best_of"),
        ({"best_of": 21}, "best_of"),
        ({"logprobs": 6}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),  # allowed only with echo
    ],
)
def test_bad_completion_fields_are_400(cluster: Cluster, fields: dict[str, Any], param: str) -> None:
    body = {"model": CHAT_MODEL, "prompt": "x", **fields}
    assert_error(post(cluster, "/v1/completions", json=body), 400, param=param)


def test_completion_errors(cluster: Cluster) -> None:
    assert_error(post(cluster, "/v1/completions", json={"model": CHAT_MODEL, "prompt": ""}), 400, param="prompt")
    assert_error(post(cluster, "/v1/completions", json={"model": CHAT_MODEL}), 400, param="prompt")
    body = {"model": EMBEDDING_MODEL, "prompt": "x"}
    assert_error(post(cluster, "/v1/completions", json=body), 400, param="model")


def test_embedding_errors(cluster: Cluster) -> None:
    assert_error(post(cluster, "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": []}), 400, param="input")
    body = {"model": EMBEDDING_MODEL, "input": "x", "dimensions": 3}
    assert_error(post(cluster, "/v1/embeddings", json=body), 400, param="dimensions")
    assert_error(post(cluster, "/v1/embeddings", json={"model": "nope", "input": "x"}), 404)
