"""Tenant-bound workers: dispatch never sends a tenant's request to another tenant's worker."""

from __future__ import annotations

import pytest

from tokenyard.controller.dispatch import ShortestQueue, dispatch
from tokenyard.controller.registry import WorkerRegistry
from tokenyard.errors import ModelNotFoundError, NoHealthyWorkerError

from .conftest import FakeClock, StatusFactory


@pytest.fixture
def registry(make_status: StatusFactory) -> WorkerRegistry:
    registry = WorkerRegistry(clock=FakeClock())
    for worker_id, tenants, queue in [("a-own", ["a"], 50), ("b-own", ["b"], 0), ("shared", [], 50)]:
        registry.upsert(make_status(worker_id, queue_length=queue, tenants=tenants))
    registry.upsert(make_status("b-private", models=["private"], tenants=["b"]))
    return registry


def test_a_tenant_gets_its_own_or_shared_workers_never_another_tenants(registry: WorkerRegistry) -> None:
    policy = ShortestQueue()
    # b-own is idle and a's are busy: a still never gets b-own.
    picks = {dispatch(registry, policy, "chat", tenant="a").worker_id for _ in range(20)}
    assert picks <= {"a-own", "shared"} and picks
    assert dispatch(registry, policy, "chat", tenant="b").worker_id == "b-own"
    assert {dispatch(registry, policy, "chat", tenant=None).worker_id for _ in range(5)} == {"shared"}


def test_when_a_tenants_workers_are_all_tried_it_is_not_sent_elsewhere(registry: WorkerRegistry) -> None:
    with pytest.raises(NoHealthyWorkerError):
        dispatch(registry, ShortestQueue(), "chat", exclude=["a-own", "shared"], tenant="a")


def test_a_model_only_another_tenant_serves_does_not_exist(registry: WorkerRegistry) -> None:
    with pytest.raises(ModelNotFoundError):
        dispatch(registry, ShortestQueue(), "private", tenant="a")
    assert dispatch(registry, ShortestQueue(), "private", tenant="b").worker_id == "b-private"
    reach = {m.name: m.tenants for m in registry.models()}
    assert reach == {"chat": None, "private": ["b"]}
