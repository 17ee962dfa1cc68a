"""The official `openai` client against a real cluster: logprobs, echo, best_of, cached tokens, defaults."""

from __future__ import annotations

import math
import uuid

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import CHAT_MODEL
from tests.integration.processes import Cluster

MESSAGES = [{"role": "user", "content": "你好, tell me a story"}]
CHINESE = "你好，世界！今天天气很好。我们在测试流式输出中文字符。"
# Longer than one 16-token KV block, so a request that repeats it can reuse its blocks.
SHARED_PREFIX = "The quick brown fox jumps over the lazy dog. " * 3


def test_chat_logprobs_have_openais_shape(client: OpenAI, cluster: Cluster) -> None:
    completion = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content and logprobs.refusal is None
    for item in logprobs.content:
        assert math.exp(item.logprob) <= 1 and item.bytes is not None
        assert len(item.top_logprobs) == 3
        assert all(math.exp(top.logprob) <= 1 for top in item.top_logprobs)
        assert item.top_logprobs[0].token == item.token  # greedy picks the most likely token
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob)
    raw = httpx.post(
        f"{cluster.gateway_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 2, "logprobs": True},
        timeout=30,
    ).json()
    assert set(raw["choices"][0]["logprobs"]) == {"content", "refusal"}
    assert raw["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []
    plain = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=2)
    assert plain.choices[0].logprobs is None


async def test_streamed_logprobs_equal_the_whole_answers(async_client: AsyncOpenAI) -> None:
    fields = {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 12, "temperature": 0, "logprobs": True}
    whole = await async_client.chat.completions.create(**fields, top_logprobs=2)  # type: ignore[call-overload]
    stream = await async_client.chat.completions.create(**fields, top_logprobs=2, stream=True)  # type: ignore[call-overload]
    streamed = [
        item
        async for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs
        for item in chunk.choices[0].logprobs.content or []
    ]
    expected = whole.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [(i.token, i.bytes) for i in streamed] == [(i.token, i.bytes) for i in expected or []]
    assert [i.logprob for i in streamed] == pytest.approx([i.logprob for i in expected or []])


def test_chinese_bytes_rebuild_the_text(client: OpenAI) -> None:
    # The prompt's tokens split Chinese characters; their bytes rebuild it exactly.
    completion = client.completions.create(model=CHAT_MODEL, prompt=CHINESE, max_tokens=1, echo=True, logprobs=0)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None
    assert any(token.startswith("bytes:") for token in logprobs.tokens)  # pieces of a character
    chat = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": CHINESE}], max_tokens=10, temperature=0, logprobs=True
    )
    content = chat.choices[0].logprobs.content or []  # type: ignore[union-attr]
    rebuilt = bytes(b for item in content for b in item.bytes or [])
    assert rebuilt.decode(errors="replace") == chat.choices[0].message.content


def test_completion_logprobs_have_the_legacy_shape(client: OpenAI) -> None:
    completion = client.completions.create(
        model=CHAT_MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert logprobs.text_offset is not None and len(logprobs.text_offset) == len(logprobs.tokens)
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert value is not None and math.exp(value) <= 1
        assert token in top and 1 <= len(top) <= 3  # two alternatives plus the chosen token
    stream = client.completions.create(
        model=CHAT_MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2, stream=True
    )
    streamed = [t for chunk in stream if chunk.choices[0].logprobs for t in chunk.choices[0].logprobs.tokens or []]
    assert streamed == logprobs.tokens


def test_echo_returns_the_prompt_and_its_logprobs(client: OpenAI) -> None:
    prompt = "Hello world! This is"
    echoed = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith(prompt) and len(echoed.choices[0].text) > len(prompt)
    scored = client.completions.create(
        model=CHAT_MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=1
    )
    logprobs = scored.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(value is not None and value <= 0 for value in logprobs.token_logprobs[1:])
    assert "".join(logprobs.tokens).startswith(prompt)
    assert (
        scored.usage is not None and len(logprobs.tokens) == scored.usage.prompt_tokens + scored.usage.completion_tokens
    )
    only = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert only.choices[0].text == prompt
    assert only.usage is not None and only.usage.completion_tokens == 0
    assert (
        only.choices[0].logprobs is not None
        and only.choices[0].logprobs.token_logprobs == logprobs.token_logprobs[: only.usage.prompt_tokens]
    )


def test_streamed_echo_comes_first(client: OpenAI) -> None:
    stream = client.completions.create(model=CHAT_MODEL, prompt="Once", max_tokens=4, echo=True, stream=True)
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert text.startswith("Once") and len(text) > len("Once")


@pytest.mark.parametrize("ids", [[5, -1], [5, 2**40], [5, 10**30]])
def test_echo_of_token_ids_the_tokenizer_cannot_take_is_a_400(client: OpenAI, ids: list[int]) -> None:
    """Found by schemathesis: echo decoded such ids before the engine's check, and got a 500."""
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model=CHAT_MODEL, prompt=ids, max_tokens=2, echo=True, stream=stream)
        assert raised.value.body["param"] == "prompt"  # type: ignore[index]


def test_best_of_returns_n_and_counts_every_candidate(client: OpenAI) -> None:
    completion = client.completions.create(
        model=CHAT_MODEL, prompt="Once upon a time", max_tokens=5, best_of=3, n=1, extra_body={"ignore_eos": True}
    )
    assert [choice.index for choice in completion.choices] == [0]
    assert completion.choices[0].logprobs is None  # used for ranking, not asked for by the client
    assert completion.usage is not None and completion.usage.completion_tokens == 3 * 5
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=CHAT_MODEL, prompt="x", best_of=3, stream=True)
    assert caught.value.param == "best_of"  # type: ignore[attr-defined]


def test_cached_tokens_come_from_the_prefix_cache(client: OpenAI) -> None:
    fresh = f"{uuid.uuid4().hex} {SHARED_PREFIX}"  # never seen by this worker
    first = client.completions.create(model=CHAT_MODEL, prompt=fresh + "One", max_tokens=2, temperature=0)
    second = client.completions.create(model=CHAT_MODEL, prompt=fresh + "Two", max_tokens=2, temperature=0)
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert 16 <= second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens
    chat = [{"role": "user", "content": fresh + "Three"}]
    client.chat.completions.create(model=CHAT_MODEL, messages=chat, max_tokens=2, temperature=0)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=chat,  # type: ignore[arg-type]
        max_tokens=2,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens >= 16


def test_completions_default_to_sixteen_tokens(client: OpenAI, cluster: Cluster) -> None:
    completion = client.completions.create(model=CHAT_MODEL, prompt="Once", extra_body={"ignore_eos": True})
    assert completion.usage is not None and completion.usage.completion_tokens == 16
    # An explicit null means "up to the context length" (2048 tokens for the tiny model).
    near_full = [5] * (2048 - 5)
    body = {"model": CHAT_MODEL, "prompt": near_full, "max_tokens": None, "ignore_eos": True}
    response = httpx.post(f"{cluster.gateway_url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 5
    with pytest.raises(openai.BadRequestError) as caught:  # the default 16 does not fit
        client.completions.create(model=CHAT_MODEL, prompt=near_full)
    assert caught.value.code == "context_length_exceeded"
