"""Dispatch policies and the dispatch step: least load, round robin, lottery, and the error cases."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from tokenyard.controller.dispatch import Lottery, RoundRobin, ShortestQueue, dispatch, make_policy
from tokenyard.controller.registry import WorkerEntry, WorkerRegistry
from tokenyard.errors import ModelNotFoundError, NoHealthyWorkerError
from tokenyard.protocol.internal import DispatchPolicy, WorkerState

from .conftest import FakeClock, StatusFactory

EntryFactory = Callable[..., WorkerEntry]


@pytest.fixture
def entry(make_status: StatusFactory) -> EntryFactory:
    def build(worker_id: str, queue_length: int = 0, speed: float = 1.0) -> WorkerEntry:
        return WorkerEntry(make_status(worker_id, queue_length=queue_length, speed=speed), last_report=0.0)

    return build


def test_shortest_queue_weighs_queue_by_speed(entry: EntryFactory) -> None:
    # loads: slow 2/1 = 2.0, fast 6/4 = 1.5, busy 9/1 = 9.0
    workers = [entry("slow", 2, 1.0), entry("fast", 6, 4.0), entry("busy", 9, 1.0)]
    assert ShortestQueue().choose("chat", workers).worker_id == "fast"


def test_shortest_queue_counts_dispatched_since_report(entry: EntryFactory) -> None:
    a, b = entry("a", 0), entry("b", 1)
    a.dispatched_since_report = 2
    assert ShortestQueue().choose("chat", [a, b]) is b


def test_shortest_queue_spreads_equal_workers(entry: EntryFactory) -> None:
    policy = ShortestQueue()
    workers = [entry("a"), entry("b"), entry("c")]
    # Loads never change here (as if reports kept resetting them), so only the tie-break spreads load.
    picks = [policy.choose("chat", workers).worker_id for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_cycles_per_model(entry: EntryFactory) -> None:
    policy = RoundRobin()
    chat = [entry("a"), entry("b"), entry("c")]
    embed = [entry("e1"), entry("e2")]
    picks = [policy.choose("chat", chat).worker_id for _ in range(2)]
    picks += [policy.choose("embed", embed).worker_id for _ in range(3)]
    picks += [policy.choose("chat", chat).worker_id for _ in range(2)]
    assert picks == ["a", "b", "e1", "e2", "e1", "c", "a"]


def test_lottery_respects_speed_weights(entry: EntryFactory) -> None:
    policy = Lottery(random.Random(1234))
    workers = [entry("slow", speed=1.0), entry("fast", speed=3.0)]
    counts = Counter(policy.choose("chat", workers).worker_id for _ in range(4000))
    assert counts["fast"] / 4000 == pytest.approx(0.75, abs=0.03)
    assert counts["slow"] > 0


def test_lottery_is_reproducible_with_a_seed(entry: EntryFactory) -> None:
    workers = [entry("a"), entry("b"), entry("c")]
    runs = [[Lottery(random.Random(7)).choose("chat", workers).worker_id]]
    for _ in range(2):
        policy = Lottery(random.Random(7))
        runs.append([policy.choose("chat", workers).worker_id for _ in range(20)])
    assert runs[1] == runs[2]
    assert runs[1][0] == runs[0][0]
    assert set(runs[1]) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        (DispatchPolicy.SHORTEST_QUEUE, ShortestQueue),
        (DispatchPolicy.ROUND_ROBIN, RoundRobin),
        (DispatchPolicy.LOTTERY, Lottery),
    ],
)
def test_make_policy(policy: DispatchPolicy, kind: type) -> None:
    assert isinstance(make_policy(policy), kind)


def test_dispatch_spreads_a_burst_within_one_heartbeat(clock: FakeClock, make_status: StatusFactory) -> None:
    registry = WorkerRegistry(clock=clock)
    registry.upsert(make_status("a", queue_length=0))
    registry.upsert(make_status("b", queue_length=2))
    policy = ShortestQueue()

    picks = [dispatch(registry, policy, "chat").worker_id for _ in range(6)]

    # a takes two until it matches b's reported queue, then they alternate.
    assert picks == ["a", "a", "a", "b", "a", "b"]
    a = registry.get("a")
    assert a is not None
    assert a.dispatched_since_report == 4
    assert registry.upsert(make_status("a", queue_length=1)).dispatched_since_report == 0


def test_dispatch_unknown_model_is_not_found(clock: FakeClock) -> None:
    with pytest.raises(ModelNotFoundError, match="`nope` does not exist"):
        dispatch(WorkerRegistry(clock=clock), RoundRobin(), "nope")


def test_dispatch_known_model_without_healthy_worker(clock: FakeClock, make_status: StatusFactory) -> None:
    registry = WorkerRegistry(clock=clock)
    registry.upsert(make_status("w1", state=WorkerState.DRAINING, reason="shutting down"))

    with pytest.raises(NoHealthyWorkerError) as caught:
        dispatch(registry, RoundRobin(), "chat")

    assert caught.value.status_code == 503
    assert "No healthy worker is serving model `chat`" in caught.value.message
    assert "w1 draining (shutting down)" in caught.value.message
