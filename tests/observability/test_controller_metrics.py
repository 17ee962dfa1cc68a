"""The controller's metrics: workers by state, missed heartbeats, evictions and dispatch outcomes."""

from __future__ import annotations

import httpx
import pytest

from tests.controller.conftest import FakeClock, StatusFactory
from tests.controller.conftest import make_status as make_status_fixture
from tokenyard.config import ControllerConfig
from tokenyard.controller.app import create_app
from tokenyard.controller.registry import WorkerRegistry
from tokenyard.observability.controller import ControllerMetrics
from tokenyard.observability.endpoint import new_registry
from tokenyard.protocol.internal import WorkerState


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


make_status = make_status_fixture


def test_registry_counts_missed_heartbeats_and_evictions(clock: FakeClock, make_status: StatusFactory) -> None:
    workers = WorkerRegistry(clock=clock, expiry_intervals=3)
    metrics = ControllerMetrics(new_registry(), workers)
    workers.upsert(make_status("w1", heartbeat_interval=2.0))
    workers.upsert(make_status("w2", models=["embed"], heartbeat_interval=2.0))
    clock.advance(2.0)
    workers.upsert(make_status("w1", heartbeat_interval=2.0))  # on time: nothing missed
    clock.advance(6.0)
    workers.upsert(make_status("w1", heartbeat_interval=2.0))  # two beats missed in between
    workers.sweep()  # w2 silent for 8 s > 3 x 2 s: evicted
    workers.evict("w1", "failed probe")
    registry = metrics.registry
    assert registry.get_sample_value("tokenyard_controller_heartbeats_missed_total") == 2
    assert registry.get_sample_value("tokenyard_controller_evictions_total", {"reason": "missed_heartbeats"}) == 1
    assert registry.get_sample_value("tokenyard_controller_evictions_total", {"reason": "failed_probe"}) == 1
    assert registry.get_sample_value("tokenyard_controller_workers", {"model": "embed", "state": "evicted"}) == 1
    assert registry.get_sample_value("tokenyard_controller_workers", {"model": "chat", "state": "healthy"}) == 0


async def test_dispatch_outcomes_are_counted(clock: FakeClock, make_status: StatusFactory) -> None:
    app = create_app(ControllerConfig(startup_grace=0), None, clock=clock)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
        loading = make_status("w1", models=["chat"], state=WorkerState.LOADING, kind=None, context_length=0)
        await client.post("/register", json=loading.model_dump(mode="json"))
        refused = await client.post("/dispatch", json={"model": "chat"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_loading"
        assert int(refused.headers["retry-after"]) >= 1
        await client.post("/register", json=make_status("w1", models=["chat"]).model_dump(mode="json"))
        assert (await client.post("/dispatch", json={"model": "chat"})).status_code == 200
        assert (await client.post("/dispatch", json={"model": "nope"})).status_code == 404
        text = (await client.get("/metrics")).text
    for outcome in ("model_loading", "dispatched", "model_not_found"):
        assert f'tokenyard_controller_dispatch_total{{outcome="{outcome}",policy="shortest-queue"}} 1.0' in text
