"""Shared fixtures for the controller tests: a hand-driven clock and a WorkerStatus factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tokenyard.protocol.internal import ModelKind, WorkerStatus

StatusFactory = Callable[..., WorkerStatus]


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_status() -> StatusFactory:
    def factory(worker_id: str = "w1", models: list[str] | None = None, **fields: Any) -> WorkerStatus:
        port = 21002 + sum(map(ord, worker_id)) % 100
        defaults: dict[str, Any] = {
            "address": f"http://127.0.0.1:{port}",
            "kind": ModelKind.GENERATE,
            "context_length": 2048,
            "heartbeat_interval": 2.0,
        }
        defaults.update(fields)
        return WorkerStatus(worker_id=worker_id, models=models or ["chat"], **defaults)

    return factory
