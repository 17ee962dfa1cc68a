"""The official `openai` client against a real gateway, controller and workers (tiny models)."""

from __future__ import annotations

import math

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.integration.processes import Cluster

MESSAGES = [{"role": "user", "content": "你好, tell me a story"}]


def test_models_lists_both_workers(client: OpenAI) -> None:
    ids = sorted(model.id for model in client.models.list())
    assert ids == sorted([CHAT_MODEL, EMBEDDING_MODEL])


def test_chat_completion(client: OpenAI) -> None:
    completion = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == CHAT_MODEL
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_streamed_chat_equals_non_streamed_at_temperature_zero(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == whole.choices[0].message.content
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_stream_ends_with_done(cluster: Cluster) -> None:
    body = {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{cluster.gateway_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert sum(line == "data: [DONE]" for line in lines) == 1


def test_n_choices_and_seed(client: OpenAI) -> None:
    first = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=8, n=3, seed=7)
    again = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=8, n=3, seed=7)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    single = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=8, seed=7)
    assert first.usage is not None and single.usage is not None
    # The prompt is counted once however many choices it has, as OpenAI does.
    assert first.usage.prompt_tokens == single.usage.prompt_tokens
    assert 3 <= first.usage.completion_tokens <= 24


def test_text_completion(client: OpenAI) -> None:
    completion = client.completions.create(model=CHAT_MODEL, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert completion.object == "text_completion"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 5


def test_text_completion_many_prompts_and_token_ids(client: OpenAI) -> None:
    completion = client.completions.create(model=CHAT_MODEL, prompt=["a b", "c d"], max_tokens=3, temperature=0)
    assert [c.index for c in completion.choices] == [0, 1]
    by_ids = client.completions.create(model=CHAT_MODEL, prompt=[5, 6, 7], max_tokens=3, temperature=0)
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == 3


def test_streamed_text_completion(client: OpenAI) -> None:
    stream = client.completions.create(model=CHAT_MODEL, prompt="Once", max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_embeddings_float_and_base64(client: OpenAI, cluster: Cluster) -> None:
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=["hello world", "你好，世界"])
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert result.usage.prompt_tokens > 0
    raw = httpx.post(
        f"{cluster.gateway_url}/v1/embeddings",
        json={"model": EMBEDDING_MODEL, "input": ["hello world", "你好，世界"], "encoding_format": "float"},
        timeout=30,
    ).json()
    assert [d["embedding"] for d in raw["data"]] == vectors
    # The openai client asks for base64 by default and decodes it; both must agree.
    assert all(len(v) == len(vectors[0]) for v in vectors)


async def test_concurrent_embedding_requests_each_get_their_own_vectors(cluster: Cluster) -> None:
    # 16 at a time, one input each: they share the worker's batches and the gateway's pooled
    # connections to it, yet each answer must be its own sentence's vector (and base64 the same floats).
    import asyncio
    import base64
    import struct

    # Token ids: the tiny model's vocabulary reads most words as one unknown token, and so gives many
    # sentences the very same vector.
    inputs = [[5 + i, 6 + (i * 7) % 50, 7 + i % 3] for i in range(40)]
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=60, limits=limits) as http:

        async def one(i: int) -> list[float]:
            encoding = "base64" if i % 2 else "float"
            body = {"model": EMBEDDING_MODEL, "input": inputs[i], "encoding_format": encoding}
            response = await http.post("/v1/embeddings", json=body)
            assert response.status_code == 200, response.text
            vector = response.json()["data"][0]["embedding"]
            if encoding == "base64":
                raw = base64.b64decode(vector)
                return list(struct.unpack(f"<{len(raw) // 4}f", raw))
            return [float(x) for x in vector]

        concurrent = await asyncio.gather(*(one(i) for i in range(len(inputs))))
        whole = (await http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": inputs})).json()
    together = [d["embedding"] for d in whole["data"]]
    for i, (mine, reference) in enumerate(zip(concurrent, together, strict=True)):
        # the same floats (float32 through base64), from the worker's cache or a batch of any shape
        assert mine == pytest.approx(reference, abs=1e-6), f"input {i} got another vector"


async def test_async_client_concurrent_streams(async_client: AsyncOpenAI) -> None:
    import asyncio

    async def one(i: int) -> str:
        stream = await async_client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": f"count {i}"}], max_tokens=8, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(*(one(i) for i in range(4)))
    assert len(texts) == 4


def test_logit_bias_and_penalties_reach_the_engine(client: OpenAI) -> None:
    # +100 on one token makes greedy decoding repeat it; the same request without it does not.
    forced = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        logit_bias={"65": 100},
        extra_body={"ignore_eos": True},
    )
    plain = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=6, temperature=0)
    text = forced.choices[0].message.content or ""
    assert text and text == text[: len(text) // 6] * 6
    assert text != plain.choices[0].message.content
    penalised = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=6, temperature=0, presence_penalty=2, frequency_penalty=2
    )
    assert penalised.choices[0].finish_reason in ("stop", "length")
