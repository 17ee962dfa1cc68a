"""WorkerRegistry: soft state from heartbeats, expiry by the worker's own interval, forgetting."""

from __future__ import annotations

import pytest

from tokenyard.controller.registry import WorkerRegistry
from tokenyard.protocol.internal import ModelKind, WorkerState

from .conftest import FakeClock, StatusFactory


@pytest.fixture
def registry(clock: FakeClock) -> WorkerRegistry:
    return WorkerRegistry(clock=clock, expiry_intervals=3.0, forget_after=300.0)


def test_upsert_registers_and_heartbeat_replaces_status(registry: WorkerRegistry, make_status: StatusFactory) -> None:
    registry.upsert(make_status("w1", queue_length=4))
    registry.upsert(make_status("w1", queue_length=1))

    [info] = registry.workers()
    assert info.worker_id == "w1"
    assert info.queue_length == 1
    assert info.state is WorkerState.HEALTHY


def test_evicted_after_three_intervals_not_before(
    registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory
) -> None:
    registry.upsert(make_status("w1", heartbeat_interval=2.0))

    clock.advance(6.0)  # exactly 3 intervals: not yet
    assert registry.sweep() == []
    assert [e.worker_id for e in registry.candidates("chat")] == ["w1"]

    clock.advance(0.2)
    assert registry.sweep() == ["w1"]
    assert registry.candidates("chat") == []
    [info] = registry.workers()
    assert info.state is WorkerState.EVICTED
    assert info.reason == "no heartbeat for 6.2 s"
    assert info.last_heartbeat_age == pytest.approx(6.2)
    assert registry.sweep() == []  # evicted once, not on every sweep


def test_expiry_uses_each_workers_own_interval(
    registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory
) -> None:
    registry.upsert(make_status("fast", heartbeat_interval=1.0))
    registry.upsert(make_status("slow", heartbeat_interval=10.0))

    clock.advance(5.0)
    assert registry.sweep() == ["fast"]
    assert [e.worker_id for e in registry.candidates("chat")] == ["slow"]


def test_heartbeats_keep_a_worker_alive(registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory) -> None:
    for _ in range(10):
        clock.advance(5.0)
        registry.upsert(make_status("w1"))
        assert registry.sweep() == []


def test_heartbeat_after_eviction_re_registers(
    registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory
) -> None:
    registry.upsert(make_status("w1"))
    clock.advance(7.0)
    registry.sweep()

    registry.upsert(make_status("w1", queue_length=2))

    [info] = registry.workers()
    assert info.state is WorkerState.HEALTHY
    assert info.reason == ""
    assert info.last_heartbeat_age == 0
    assert [e.worker_id for e in registry.candidates("chat")] == ["w1"]


def test_evicted_worker_forgotten_after_forget_after(
    registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory
) -> None:
    registry.upsert(make_status("w1", models=["chat"]))
    clock.advance(7.0)
    registry.sweep()

    clock.advance(300.0)
    registry.sweep()
    assert registry.knows_model("chat")
    assert len(registry.workers()) == 1

    clock.advance(1.0)
    registry.sweep()
    assert registry.workers() == []
    assert not registry.knows_model("chat")


def test_report_resets_dispatched_since_report(registry: WorkerRegistry, make_status: StatusFactory) -> None:
    entry = registry.upsert(make_status("w1", queue_length=0))
    entry.dispatched_since_report += 3
    assert entry.load() == 3

    fresh = registry.upsert(make_status("w1", queue_length=3))

    assert fresh.dispatched_since_report == 0
    assert registry.get("w1") is fresh
    assert fresh.load() == 3  # the worker's own count now holds those three requests


def test_candidates_only_healthy_workers_of_that_model(
    registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory
) -> None:
    registry.upsert(make_status("gone", heartbeat_interval=1.0))
    clock.advance(4.0)
    registry.upsert(make_status("b-healthy"))
    registry.upsert(make_status("a-healthy", models=["chat", "alias"]))
    registry.upsert(make_status("draining", state=WorkerState.DRAINING))
    registry.upsert(make_status("sick", state=WorkerState.UNHEALTHY, reason="CUDA OOM"))
    registry.upsert(make_status("other", models=["embed"]))
    registry.sweep()

    assert [e.worker_id for e in registry.candidates("chat")] == ["a-healthy", "b-healthy"]
    assert [e.worker_id for e in registry.candidates("alias")] == ["a-healthy"]
    states = {info.worker_id: info.state for info in registry.workers()}
    assert states == {
        "a-healthy": WorkerState.HEALTHY,
        "b-healthy": WorkerState.HEALTHY,
        "draining": WorkerState.DRAINING,
        "gone": WorkerState.EVICTED,
        "other": WorkerState.HEALTHY,
        "sick": WorkerState.UNHEALTHY,
    }


def test_remove_unregisters_but_model_stays_known_for_a_while(
    registry: WorkerRegistry, clock: FakeClock, make_status: StatusFactory
) -> None:
    registry.upsert(make_status("w1"))

    assert registry.remove("w1")
    assert not registry.remove("w1")
    assert registry.workers() == []
    assert registry.candidates("chat") == []
    assert registry.knows_model("chat")  # a restarting worker's model is unavailable, not unknown

    clock.advance(301.0)
    registry.sweep()
    assert not registry.knows_model("chat")
    assert not registry.knows_model("never-served")


def test_models_lists_healthy_models_with_counts(registry: WorkerRegistry, make_status: StatusFactory) -> None:
    registry.upsert(make_status("w1", models=["chat"], context_length=4096))
    registry.upsert(make_status("w2", models=["chat"], context_length=2048))
    registry.upsert(make_status("e1", models=["embed"], kind=ModelKind.EMBED, context_length=512))
    registry.upsert(make_status("d1", models=["drained"], state=WorkerState.DRAINING))

    models = {m.name: m for m in registry.models()}

    assert sorted(models) == ["chat", "embed"]
    assert models["chat"].num_workers == 2
    assert models["chat"].context_length == 2048
    assert models["embed"].kind is ModelKind.EMBED


def test_routes_list_healthy_workers_per_model(registry: WorkerRegistry, make_status: StatusFactory) -> None:
    registry.upsert(make_status("w1", models=["chat", "alias"], address="http://h1:1"))
    registry.upsert(make_status("w2", models=["chat"], address="http://h2:2", state=WorkerState.DRAINING))

    table = registry.routes()

    assert [(r.model, [w.address for w in r.workers]) for r in table.routes] == [
        ("alias", ["http://h1:1"]),
        ("chat", ["http://h1:1"]),
    ]


def test_rejects_nonsense_settings(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="expiry_intervals"):
        WorkerRegistry(clock=clock, expiry_intervals=0)
