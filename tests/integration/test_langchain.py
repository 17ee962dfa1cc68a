"""LangChain's OpenAI integrations (`langchain-openai`) against a live tokenyard cluster.

LangChain is how many applications reach an OpenAI-compatible server, and it sends requests the
official client's defaults do not (`stream_options`, `n`, its own parameter names), so it is
tested on its own: a chat invoke, a stream, a tool-binding call, and document/query embeddings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
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

    city: str = Field(description="The city, e.g. Paris", max_length=12)  # bounded: the model is random


@pytest.fixture
async def http_clients() -> AsyncIterator[dict[str, Any]]:
    """HTTP clients the test closes: LangChain's own shared ones stay open until exit, and an
    unclosed socket collected during a later test would fail it (warnings are errors)."""
    with httpx.Client(timeout=60) as sync_client:
        async with httpx.AsyncClient(timeout=60) as async_client:
            yield {"http_client": sync_client, "http_async_client": async_client}


def make_chat(cluster: Cluster, http_clients: dict[str, Any], max_tokens: int = MAX_TOKENS) -> ChatOpenAI:
    # temperature 0 makes the tiny model deterministic, so the stream can be compared to invoke.
    return ChatOpenAI(
        model=CHAT_MODEL,
        base_url=f"{cluster.gateway_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        temperature=0,
        max_tokens=max_tokens,  # type: ignore[call-arg]
        max_retries=0,
        **http_clients,
    )


@pytest.fixture
def chat(cluster: Cluster, http_clients: dict[str, Any]) -> ChatOpenAI:
    return make_chat(cluster, http_clients)


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


def test_bound_tools_return_a_tool_call(cluster: Cluster, http_clients: dict[str, Any]) -> None:
    chat = make_chat(cluster, http_clients, max_tokens=200)  # room for a whole call
    reply = chat.bind_tools([GetWeather], tool_choice="GetWeather").invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage)
    [call] = reply.tool_calls
    assert call["name"] == "GetWeather" and str(call["id"]).startswith("call_")
    GetWeather.model_validate(call["args"])
    assert reply.response_metadata["finish_reason"] == "tool_calls"


def test_streamed_bound_tools_give_the_same_call(cluster: Cluster, http_clients: dict[str, Any]) -> None:
    bound = make_chat(cluster, http_clients, max_tokens=200).bind_tools([GetWeather], tool_choice="required")
    chunks = list(bound.stream("What is the weather in Paris?"))
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    assert isinstance(streamed, AIMessageChunk)
    invoked = bound.invoke("What is the weather in Paris?")
    assert isinstance(invoked, AIMessage)
    assert [c["args"] for c in streamed.tool_calls] == [c["args"] for c in invoked.tool_calls]


def test_structured_output_parses_into_the_model(cluster: Cluster, http_clients: dict[str, Any]) -> None:
    structured = make_chat(cluster, http_clients, max_tokens=200).with_structured_output(GetWeather)
    answer = structured.invoke("What is the weather in Paris?")
    assert isinstance(answer, GetWeather)


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
