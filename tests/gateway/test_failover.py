"""Failover before the first token: which failures move a request to another worker, and what the
client hears when none is left."""

from __future__ import annotations

import pytest

from tests.gateway.fakes import FakeRouter
from tokenyard.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NoHealthyWorkerError,
    OverloadedError,
    TokenyardError,
    UpstreamError,
    WorkerError,
)
from tokenyard.gateway.failover import with_failover
from tokenyard.protocol.internal import DispatchResponse


def router_of(num_workers: int) -> FakeRouter:
    """Workers w0, w1, ... for model "m"."""
    return FakeRouter(*(f"w{i}" for i in range(num_workers)))


def failing(errors: dict[str, TokenyardError]):  # type: ignore[no-untyped-def]
    async def attempt(target: DispatchResponse) -> str:
        if target.worker_id in errors:
            raise errors[target.worker_id]
        return target.worker_id

    return attempt


async def test_unreachable_worker_is_reported_and_skipped() -> None:
    router = router_of(3)
    result = await with_failover(router, "m", failing({"w0": WorkerError("refused")}), 3)  # type: ignore[arg-type]
    assert result == "w1"
    assert router.reported == ["w0"]
    assert router.excludes == [[], ["w0"]]
    assert router.observer.registry.get_sample_value("tokenyard_gateway_retries_total", {"model": "m"}) == 1


async def test_draining_and_saturated_workers_are_skipped_but_not_reported() -> None:
    router = router_of(3)
    errors: dict[str, TokenyardError] = {
        "w0": UpstreamError(503, "service_unavailable", "draining"),
        "w1": OverloadedError("full", retry_after=2),
    }
    assert await with_failover(router, "m", failing(errors), 3) == "w2"  # type: ignore[arg-type]
    assert router.reported == []


async def test_bad_requests_are_not_retried() -> None:
    router = router_of(3)
    with pytest.raises(InvalidRequestError):
        await with_failover(router, "m", failing({"w0": InvalidRequestError("bad")}), 3)  # type: ignore[arg-type]
    assert len(router.excludes) == 1


async def test_all_saturated_is_429_with_the_shortest_retry_after() -> None:
    router = router_of(2)
    errors: dict[str, TokenyardError] = {
        "w0": OverloadedError("full", retry_after=5),
        "w1": UpstreamError(429, "rate_limit_error", "full", retry_after=2),
    }
    with pytest.raises(OverloadedError) as caught:
        await with_failover(router, "m", failing(errors), 5)  # type: ignore[arg-type]
    assert caught.value.status_code == 429 and caught.value.retry_after == 2


async def test_no_worker_left_is_503() -> None:
    router = router_of(2)
    errors: dict[str, TokenyardError] = {"w0": WorkerError("gone"), "w1": WorkerError("gone too")}
    with pytest.raises(NoHealthyWorkerError) as caught:
        await with_failover(router, "m", failing(errors), 5)  # type: ignore[arg-type]
    assert "gone too" in caught.value.message


async def test_attempts_are_bounded() -> None:
    router = router_of(10)
    errors: dict[str, TokenyardError] = {f"w{i}": WorkerError("gone") for i in range(10)}
    with pytest.raises(NoHealthyWorkerError):
        await with_failover(router, "m", failing(errors), 3)  # type: ignore[arg-type]
    assert len(router.excludes) == 3


async def test_unknown_model_is_not_retried() -> None:
    with pytest.raises(ModelNotFoundError):
        await with_failover(router_of(1), "other", failing({}), 3)  # type: ignore[arg-type]


async def test_mixed_saturated_and_failed_workers_is_still_429() -> None:
    router = router_of(2)
    errors: dict[str, TokenyardError] = {"w0": WorkerError("gone"), "w1": OverloadedError("full", retry_after=3)}
    with pytest.raises(OverloadedError) as caught:
        await with_failover(router, "m", failing(errors), 5)  # type: ignore[arg-type]
    assert caught.value.retry_after == 3
