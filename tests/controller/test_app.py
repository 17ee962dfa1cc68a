"""The controller over HTTP (in-process ASGI): registration, dispatch, expiry, auth and the sweep task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tokenyard.config import ControllerConfig
from tokenyard.controller.app import create_app
from tokenyard.controller.registry import WorkerRegistry
from tokenyard.protocol.internal import DispatchPolicy, WorkerState
from tokenyard.web import CLUSTER_TOKEN_HEADER

from .conftest import FakeClock, StatusFactory

TOKEN = "s3cret"


@pytest.fixture
def app(clock: FakeClock) -> FastAPI:
    return create_app(ControllerConfig(startup_grace=0), TOKEN, clock=clock)


def _client(app: FastAPI, *, token: str | None = TOKEN, peer: str = "10.0.0.7") -> httpx.AsyncClient:
    # A non-loopback peer by default, so these tests exercise the token path.
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    headers = {CLUSTER_TOKEN_HEADER: token} if token else {}
    return httpx.AsyncClient(transport=transport, base_url="http://controller", headers=headers)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as http:
        yield http


async def _register(client: httpx.AsyncClient, make_status: StatusFactory, *args: Any, **kw: Any) -> None:
    response = await client.post("/register", json=make_status(*args, **kw).model_dump(mode="json"))
    assert response.status_code == 200
    assert response.json() == {"accepted": True}


async def test_register_then_models_then_dispatch(client: httpx.AsyncClient, make_status: StatusFactory) -> None:
    await _register(client, make_status, "w1", models=["chat"], address="http://h:21002", context_length=4096)

    models = (await client.get("/models")).json()
    assert models == {
        "models": [{"name": "chat", "kind": "generate", "context_length": 4096, "num_workers": 1, "tenants": None}],
        "loading": [],
    }

    response = await client.post("/dispatch", json={"model": "chat"})
    assert response.status_code == 200
    assert response.json() == {
        "worker_id": "w1",
        "address": "http://h:21002",
        "kind": "generate",
        "context_length": 4096,
        "tenants": [],
    }


async def test_heartbeat_registers_unknown_worker(client: httpx.AsyncClient, make_status: StatusFactory) -> None:
    # A restarted controller learns its workers from their next heartbeat.
    status = make_status("w1", queue_length=3).model_dump(mode="json")
    assert (await client.post("/heartbeat", json=status)).json() == {"accepted": True}

    [worker] = (await client.get("/workers")).json()["workers"]
    assert worker["worker_id"] == "w1"
    assert worker["queue_length"] == 3
    assert worker["state"] == "healthy"


async def test_unknown_model_is_404_in_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/dispatch", json={"model": "nope"})

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `nope` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


async def test_known_model_with_only_a_draining_worker_is_503(
    client: httpx.AsyncClient, make_status: StatusFactory
) -> None:
    await _register(client, make_status, "w1", state=WorkerState.DRAINING, reason="SIGTERM")

    response = await client.post("/dispatch", json={"model": "chat"})

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_healthy_worker"
    assert "No healthy worker is serving model `chat`" in error["message"]
    assert "w1 draining (SIGTERM)" in error["message"]
    assert (await client.get("/models")).json() == {"models": [], "loading": []}


async def test_unregister_removes_worker(client: httpx.AsyncClient, make_status: StatusFactory) -> None:
    await _register(client, make_status, "w1")

    response = await client.post("/unregister", json={"worker_id": "w1"})
    assert response.json() == {"accepted": True}

    assert (await client.get("/workers")).json() == {"workers": []}
    assert (await client.get("/models")).json() == {"models": [], "loading": []}
    assert (await client.post("/dispatch", json={"model": "chat"})).status_code == 503
    again = await client.post("/unregister", json={"worker_id": "w1"})
    assert again.status_code == 200
    assert again.json() == {"accepted": False}


async def test_silent_worker_disappears_after_expiry(
    client: httpx.AsyncClient, clock: FakeClock, make_status: StatusFactory
) -> None:
    await _register(client, make_status, "w1", heartbeat_interval=1.0)
    await _register(client, make_status, "w2", heartbeat_interval=1.0)

    clock.advance(2.9)
    await _register(client, make_status, "w2", heartbeat_interval=1.0)  # only w2 keeps beating
    assert (await client.get("/models")).json()["models"][0]["num_workers"] == 2

    clock.advance(0.2)
    assert (await client.get("/models")).json()["models"][0]["num_workers"] == 1
    workers = {w["worker_id"]: w for w in (await client.get("/workers")).json()["workers"]}
    assert workers["w1"]["state"] == "evicted"
    assert workers["w1"]["reason"] == "no heartbeat for 3.1 s"
    for _ in range(3):
        assert (await client.post("/dispatch", json={"model": "chat"})).json()["worker_id"] == "w2"

    await _register(client, make_status, "w1", heartbeat_interval=1.0)  # back from a partition
    assert (await client.get("/models")).json()["models"][0]["num_workers"] == 2


async def test_routes_lists_healthy_workers(client: httpx.AsyncClient, make_status: StatusFactory) -> None:
    await _register(client, make_status, "w1", models=["chat"], address="http://a:1")
    await _register(client, make_status, "w2", models=["chat"], address="http://b:2", state=WorkerState.UNHEALTHY)

    table = (await client.get("/routes")).json()

    assert [(r["model"], [w["address"] for w in r["workers"]]) for r in table["routes"]] == [("chat", ["http://a:1"])]


async def test_configured_policy_is_used(clock: FakeClock, make_status: StatusFactory) -> None:
    app = create_app(ControllerConfig(dispatch=DispatchPolicy.ROUND_ROBIN), TOKEN, clock=clock)
    async with _client(app) as client:
        await _register(client, make_status, "a", queue_length=0)
        await _register(client, make_status, "b", queue_length=50)  # round robin ignores queues
        picks = [(await client.post("/dispatch", json={"model": "chat"})).json()["worker_id"] for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]


async def test_bad_body_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/register", json={"worker_id": "w1"})

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_request_without_token_is_403(app: FastAPI, make_status: StatusFactory) -> None:
    async with _client(app, token=None) as client:
        response = await client.post("/register", json=make_status().model_dump(mode="json"))
        assert response.status_code == 403
        assert "cluster token" in response.json()["error"]["message"]
        assert (await client.get("/health")).json() == {"status": "ok"}  # probes stay public
    async with _client(app, token="wrong") as client:
        assert (await client.get("/workers")).status_code == 403


async def test_loopback_peer_without_configured_token_is_accepted(clock: FakeClock, make_status: StatusFactory) -> None:
    app = create_app(ControllerConfig(), None, clock=clock)
    async with _client(app, token=None, peer="127.0.0.1") as client:
        await _register(client, make_status, "w1")
        assert (await client.post("/dispatch", json={"model": "chat"})).status_code == 200
    async with _client(app, token=None, peer="192.168.1.20") as client:
        assert (await client.get("/workers")).status_code == 403


async def test_background_sweep_evicts_and_stops_cleanly(
    clock: FakeClock, make_status: StatusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(ControllerConfig(), TOKEN, clock=clock, sweep_interval=0.001)
    registry: WorkerRegistry = app.state.registry
    caplog.set_level(logging.INFO, logger="tokenyard.controller")

    async with app.router.lifespan_context(app):
        registry.upsert(make_status("w1", address="http://h:9", heartbeat_interval=1.0))
        clock.advance(3.5)
        for _ in range(200):  # no HTTP read here: only the background task can evict
            if registry.candidates("chat") == []:
                break
            await asyncio.sleep(0.001)
        assert registry.candidates("chat") == []

    assert not [t for t in asyncio.all_tasks() if t.get_name() == "controller-sweep"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "worker w1 registered at http://h:9 serving chat (healthy)" in messages
    assert "worker w1 at http://h:9 evicted (no heartbeat for 3.5 s), served chat" in messages


async def test_dispatch_skips_excluded_workers(client: httpx.AsyncClient, make_status: StatusFactory) -> None:
    await _register(client, make_status, "w1")
    await _register(client, make_status, "w2")
    for _ in range(3):
        response = await client.post("/dispatch", json={"model": "chat", "exclude": ["w1"]})
        assert response.json()["worker_id"] == "w2"
    response = await client.post("/dispatch", json={"model": "chat", "exclude": ["w1", "w2"]})
    assert response.status_code == 503


async def test_reported_worker_that_fails_its_probe_is_evicted_at_once(
    app: FastAPI, make_status: StatusFactory
) -> None:
    from tests.integration.processes import free_port

    dead = make_status("w1", address=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    async with app.router.lifespan_context(app), _client(app) as http:
        await http.post("/register", json=dead.model_dump(mode="json"))
        report = {"worker_id": "w1", "error": "connection refused"}
        assert (await http.post("/report_failure", json=report)).json() == {"evicted": True}
        [worker] = (await http.get("/workers")).json()["workers"]
        assert worker["state"] == "evicted"
        assert "failed probe" in worker["reason"]
        assert (await http.post("/report_failure", json={"worker_id": "nobody", "error": "x"})).json() == {
            "evicted": False
        }


async def test_fresh_controller_says_warming_up_rather_than_404(clock: FakeClock) -> None:
    app = create_app(ControllerConfig(startup_grace=5), TOKEN, clock=clock)
    async with _client(app) as http:
        early = await http.post("/dispatch", json={"model": "chat"})
        assert early.status_code == 503
        assert early.json()["error"]["code"] == "registry_warming_up"
        assert (await http.get("/routes")).json()["complete"] is False
        clock.advance(6)
        assert (await http.post("/dispatch", json={"model": "chat"})).status_code == 404
        assert (await http.get("/routes")).json()["complete"] is True
