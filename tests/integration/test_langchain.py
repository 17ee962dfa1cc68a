"""LangChain's OpenAI integrations (`langchain-openai`) against a live tokenyard cluster.

LangChain is how many applications reach an OpenAI-compatible server, and it sends requests the
official client's defaults do not (`stream_options`, `n`, its own parameter names), so it is
tested on its own: a chat invoke, a stream, a tool-binding call, and document/query embeddings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.integration.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.integration.processes import Cluster

MAX_TOKENS = 8
MESSAGES = [SystemMessage("You are terse."), HumanMessage("Name a colour.")]


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="The city, e.g. Paris")


@pytest.fixture
async def http_clients() -> AsyncIterator[dict[str, Any]]:
    """HTTP clients the test closes: LangChain's own shared ones stay open until exit, and an
    unclosed socket collected during a later test would fail it (warnings are errors)."""
    with httpx.Client(timeout=60) as sync_client:
        async with httpx.AsyncClient(timeout=60) as async_client:
            yield {"http_client": sync_client, "http_async_client": async_client}


@pytest.fixture
def chat(cluster: Cluster, http_clients: dict[str, Any]) -> ChatOpenAI:
    # temperature 0 makes the tiny model deterministic, so the stream can be compared to invoke.
    return ChatOpenAI(
        model=CHAT_MODEL,
        base_url=f"{cluster.gateway_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        temperature=0,
        max_tokens=MAX_TOKENS,  # type: ignore[call-arg]
        max_retries=0,
        **http_clients,
    )


@pytest.fixture
def embeddings(cluster: Cluster, http_clients: dict[str, Any]) -> OpenAIEmbeddings:
    # The context-length check tokenizes with tiktoken, whose encodings would be downloaded; the
    # server counts and checks tokens itself.
    return OpenAIEmbeddings(
        model=EMBEDDING_MODEL,
        base_url=f"{cluster.gateway_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
        **http_clients,
    )


def test_invoke(chat: ChatOpenAI) -> None:
    reply = chat.invoke(MESSAGES)
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    assert reply.response_metadata["model_name"] == CHAT_MODEL
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert 0 < usage["output_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_stream_equals_invoke(chat: ChatOpenAI) -> None:
    chunks = list(chat.stream(MESSAGES, stream_usage=True))
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert len([c for c in chunks if c.content]) > 1, "the reply should arrive in several pieces"
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    invoked = chat.invoke(MESSAGES)
    assert streamed.content == invoked.content
    assert streamed.response_metadata["finish_reason"] == invoked.response_metadata["finish_reason"]
    assert streamed.usage_metadata == invoked.usage_metadata


async def test_async_stream(chat: ChatOpenAI) -> None:
    pieces = [chunk.content async for chunk in chat.astream(MESSAGES)]
    assert "".join(str(piece) for piece in pieces) == (await chat.ainvoke(MESSAGES)).content


def test_bound_tools_are_refused_by_name(chat: ChatOpenAI) -> None:
    """tokenyard cannot call tools yet: it must say so, naming `tools`, not answer as if it had."""
    with pytest.raises(openai.BadRequestError) as caught:
        chat.bind_tools([GetWeather]).invoke("What is the weather in Paris?")
    assert caught.value.status_code == 400
    assert caught.value.param == "tools"
    assert "tools" in caught.value.message


def test_embed_documents_and_query(embeddings: OpenAIEmbeddings, client: OpenAI) -> None:
    # Short texts: the tiny embedding model's context is 32 tokens.
    texts = ["the cat sat on the mat", "你好，世界", "a third document"]
    vectors = embeddings.embed_documents(texts)
    direct = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert len(vectors) == len(texts)
    for vector, expected in zip(vectors, direct.data, strict=True):
        assert vector == pytest.approx(expected.embedding, abs=1e-6)
    query = embeddings.embed_query(texts[1])
    assert query == pytest.approx(vectors[1], abs=1e-6)
    assert len({len(v) for v in [*vectors, query]}) == 1
