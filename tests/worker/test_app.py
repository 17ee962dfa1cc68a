"""The worker's HTTP API over a fake engine: stream framing, refusals, draining, status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import EngineStats, GenerationOutput, SamplingParams
from tokenyard.errors import OverloadedError
from tokenyard.protocol.internal import ChatMessage, GenerateChunk, GenerateRequest, ModelKind
from tokenyard.worker.app import WorkerRuntime, create_app

TOKEN = "secret"


class LetterTokenizer:
    def encode_chat(self, messages: Sequence[ChatMessage], tools: object = None) -> list[int]:
        return [ord(c) for m in messages for c in m.content]

    def encode_text(self, text: str) -> list[int]:
        return [ord(c) for c in text]


class EchoEngine:
    """Streams the prompt back one character per step; refuses when `full` is set."""

    def __init__(self) -> None:
        self.tokenizer = LetterTokenizer()
        self.context_length = 32
        self.full = False
        self.aborted: list[str] = []
        self.running = 0
        self.stalled_for = 0.0
        self.delay = 0.0

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationOutput]:
        if self.full:
            raise OverloadedError("queue full", retry_after=3)
        self.running += 1
        finished = False
        await asyncio.sleep(self.delay)
        try:
            text = [chr(t) for t in prompt_token_ids][: params.max_tokens]
            for i, char in enumerate(text):
                done = i == len(text) - 1
                reason = ("length" if len(text) == params.max_tokens else "stop") if done else None
                yield GenerationOutput(char, 1, len(prompt_token_ids), i + 1, reason)  # type: ignore[arg-type]
                await asyncio.sleep(0)
            finished = True
        finally:
            self.running -= 1
            if not finished:
                self.aborted.append(request_id)

    async def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats:
        return EngineStats(num_running=self.running, seconds_since_progress=self.stalled_for)


@pytest.fixture
def engine() -> EchoEngine:
    return EchoEngine()


@pytest.fixture
def runtime(engine: EchoEngine) -> WorkerRuntime:
    config = WorkerConfig(controller="http://127.0.0.1:9", heartbeat_interval=60)
    return WorkerRuntime(config=config, engine=engine, kind=ModelKind.GENERATE, model_names=["echo"])


@pytest.fixture
def client(runtime: WorkerRuntime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(runtime, TOKEN))
    headers = {"x-tokenyard-cluster-token": TOKEN, "content-type": "application/json"}
    return httpx.AsyncClient(transport=transport, base_url="http://worker", headers=headers)


def generate_body(prompt: str = "hello", max_tokens: int | None = None, model: str = "echo") -> str:
    sampling = SamplingParams(max_tokens=max_tokens)
    return GenerateRequest(request_id="r1", model=model, prompt=prompt, sampling=sampling).model_dump_json()


async def test_generate_streams_ndjson_chunks(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", content=generate_body("héllo", max_tokens=10))
    assert response.status_code == 200
    chunks = [GenerateChunk.model_validate_json(line) for line in response.text.splitlines()]
    assert "".join(c.text for c in chunks) == "héllo"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 5
    assert all(c.prompt_tokens == 5 for c in chunks)


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", content=generate_body(model="other"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_context_overflow_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", content=generate_body("x" * 30, max_tokens=5))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


async def test_full_queue_is_429_with_retry_after(client: httpx.AsyncClient, engine: EchoEngine) -> None:
    engine.full = True
    response = await client.post("/generate", content=generate_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


async def test_draining_worker_refuses_new_work(client: httpx.AsyncClient, runtime: WorkerRuntime) -> None:
    runtime.draining = True
    response = await client.post("/generate", content=generate_body())
    assert response.status_code == 503
    status = (await client.get("/status")).json()
    assert status["state"] == "draining"
    assert (await client.get("/ready")).status_code == 503


async def test_missing_token_is_refused(runtime: WorkerRuntime) -> None:
    transport = httpx.ASGITransport(app=create_app(runtime, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as anonymous:
        refused = await anonymous.post(
            "/generate", content=generate_body(), headers={"content-type": "application/json"}
        )
        assert refused.status_code == 403
        assert (await anonymous.get("/health")).status_code == 200


async def test_status_reports_identity(client: httpx.AsyncClient, runtime: WorkerRuntime) -> None:
    status = (await client.get("/status")).json()
    assert status["worker_id"] == runtime.worker_id
    assert status["models"] == ["echo"] and status["kind"] == "generate"
    assert status["context_length"] == 32


async def test_embedding_route_refuses_a_generation_model(client: httpx.AsyncClient) -> None:
    response = await client.post("/embed", content='{"request_id": "e", "model": "echo", "texts": ["x"]}')
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


async def test_stuck_engine_reports_unhealthy(client: httpx.AsyncClient, engine: EchoEngine) -> None:
    engine.running, engine.stalled_for = 2, 45.0
    status = (await client.get("/status")).json()
    assert status["state"] == "unhealthy"
    assert "no progress for 45 s" in status["reason"]
    assert (await client.get("/ready")).status_code == 503
    engine.running = 0  # an idle engine is never "stuck"
    assert (await client.get("/status")).json()["state"] == "healthy"


async def test_quiet_engine_streams_keepalives(
    client: httpx.AsyncClient, engine: EchoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tokenyard.worker.outputs.KEEPALIVE_SECONDS", 0.02)
    engine.delay = 0.1
    response = await client.post("/generate", content=generate_body("hi", max_tokens=5))
    chunks = [GenerateChunk.model_validate_json(line) for line in response.text.splitlines()]
    assert chunks[0].keepalive
    data = [c for c in chunks if not c.keepalive]
    assert "".join(c.text for c in data) == "hi" and data[-1].finish_reason == "stop"


async def test_stats_expose_engine_counters(client: httpx.AsyncClient) -> None:
    stats = (await client.get("/stats")).json()
    assert stats["num_running"] == 0 and "extra" in stats
