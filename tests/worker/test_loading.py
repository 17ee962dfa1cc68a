"""A worker registers while its model loads: 503 model_loading (never 404), `loading` status, then healthy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx

from tests.worker.test_app import EchoEngine, generate_body
from tokenyard.config import WorkerConfig
from tokenyard.errors import ModelLoadError
from tokenyard.protocol.internal import ModelKind
from tokenyard.worker.app import WorkerRuntime, create_app


def _runtime() -> WorkerRuntime:
    config = WorkerConfig(controller="http://127.0.0.1:9", heartbeat_interval=60)
    return WorkerRuntime(config=config, engine=None, kind=None, model_names=["echo"])


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 2 s")


async def test_loading_worker_answers_503_model_loading_then_serves() -> None:
    release = threading.Event()

    def loader(progress: Callable[[str], None]) -> tuple[EchoEngine, ModelKind]:
        progress("preparing echo")
        release.wait(timeout=10)
        return EchoEngine(), ModelKind.GENERATE

    runtime = _runtime()
    app = create_app(runtime, None, loader=loader)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as client:
        await _until(lambda: runtime.loading == "preparing echo")
        refused = await client.post("/generate", content=generate_body(), headers={"content-type": "application/json"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_loading"
        assert "`echo` is still loading (preparing echo" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        status = (await client.get("/status")).json()
        assert status["state"] == "loading" and status["reason"].startswith("preparing echo (")
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        assert 'tokenyard_worker_state{model="echo",state="loading"} 1.0' in (await client.get("/metrics")).text
        release.set()
        await _until(lambda: runtime.engine is not None)
        assert (await client.get("/ready")).status_code == 200
        served = await client.post(
            "/generate", content=generate_body("hi", max_tokens=5), headers={"content-type": "application/json"}
        )
        assert served.status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'tokenyard_request_success_total{finished_reason="stop",model="echo"} 1.0' in metrics
        assert 'tokenyard_time_to_first_token_seconds_count{model="echo"} 1.0' in metrics
        assert 'tokenyard_inter_token_latency_seconds_count{model="echo"} 1.0' in metrics


async def test_a_failed_load_is_handed_to_the_caller() -> None:
    failures: list[ModelLoadError] = []

    def loader(progress: Callable[[str], None]) -> tuple[EchoEngine, ModelKind]:
        raise ModelLoadError("no such model: nothing; check --model")

    app = create_app(_runtime(), None, loader=loader, on_load_failed=failures.append)
    async with app.router.lifespan_context(app):
        await _until(lambda: bool(failures))
    assert str(failures[0]) == "no such model: nothing; check --model"
