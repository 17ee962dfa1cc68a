"""The worker's /embed route over a fake embedding engine: the answer's shape and exact floats, and
refusals in OpenAI's error shape (the route parses and writes its JSON itself, not through FastAPI)."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

import httpx
import pytest

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import EngineStats
from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.internal import EmbedResponse, ModelKind
from tokenyard.worker.app import WorkerRuntime, create_app

TOKEN = "secret"


def float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


class FakeEncoder:
    """One 3-float vector per input, from its length; refuses inputs that say so."""

    context_length = 16
    dimensions = 3

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def embed_texts(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        if "refuse" in texts:
            raise InvalidRequestError("input 0 is too long", param="input")
        return [[float32(len(t) / 7), -1e-8, 1.0] for t in texts], sum(len(t) for t in texts)

    async def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> tuple[list[list[float]], int]:
        return [[float(len(ids)), 0.0, 0.0] for ids in token_ids], sum(len(ids) for ids in token_ids)

    def stats(self) -> EngineStats:
        return EngineStats(num_running=0, num_waiting=0, tokens_per_second=0.0)


@pytest.fixture
def client() -> httpx.AsyncClient:
    config = WorkerConfig(controller="http://127.0.0.1:9", heartbeat_interval=60)
    runtime = WorkerRuntime(config=config, engine=FakeEncoder(), kind=ModelKind.EMBED, model_names=["enc"])
    runtime.model_revision = "rev-1"
    transport = httpx.ASGITransport(app=create_app(runtime, TOKEN))
    headers = {"x-tokenyard-cluster-token": TOKEN, "content-type": "application/json"}
    return httpx.AsyncClient(transport=transport, base_url="http://worker", headers=headers)


async def test_vectors_come_back_with_every_float_exact(client: httpx.AsyncClient) -> None:
    response = await client.post("/embed", json={"request_id": "e1", "model": "enc", "texts": ["abc", "hello"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = EmbedResponse.model_validate_json(response.content)
    assert answer.embeddings == [[float32(3 / 7), -1e-8, 1.0], [float32(5 / 7), -1e-8, 1.0]]
    assert answer.prompt_tokens == 8
    assert answer.model_revision == "rev-1"
    tokens = await client.post("/embed", json={"request_id": "e2", "model": "enc", "token_ids": [[1, 2], [3]]})
    assert EmbedResponse.model_validate_json(tokens.content).embeddings == [[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ('{"request_id": "e", "texts": ["x"]}', "model", "Missing required parameter: 'model'."),
        ('{"request_id": "e", "model": "enc", "texts": [1]}', "texts.0", "Invalid value for 'texts.0'"),
        ('{"request_id": "e", "model": "enc", "texts": ["x"], "dimensions": 0}', "dimensions", "greater than"),
        ('{"request_id": "e", "model": ', None, "not valid JSON"),
        ('{"request_id": "e", "model": "enc", "texts": ["x"], "dimensions": 2}', "dimensions", "cannot shorten"),
        ('{"request_id": "e", "model": "other", "texts": ["x"]}', "model", "other"),
        ('{"request_id": "e", "model": "enc", "texts": ["refuse"]}', "input", "too long"),
    ],
)
async def test_refusals_are_400s_in_openai_shape(
    client: httpx.AsyncClient, body: str, param: str | None, words: str
) -> None:
    response = await client.post("/embed", content=body)
    assert response.status_code in (400, 404)
    error = json.loads(response.content)["error"]
    assert error["param"] == param
    assert words in error["message"]
