"""The near-quota gauge: each tenant quota's share used this period, read from the real counters
(SQL store or Redis), so TokenyardTenantNearQuota can fire."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis
from prometheus_client import CollectorRegistry, Gauge

from tests.governance.test_quotas import REDIS_URL
from tokenyard.gateway.quota_gauge import keep_quota_gauge, report_once
from tokenyard.governance.quota_admin import QuotaChange, set_quota
from tokenyard.governance.quota_redis import RedisCounters
from tokenyard.governance.quotas import Amounts, QuotaService, SqlCounters
from tokenyard.store import Store


def new_gauge() -> tuple[CollectorRegistry, Gauge]:
    registry = CollectorRegistry()
    gauge = Gauge("tokenyard_tenant_quota_usage_ratio", "share used", ["tenant", "quota"], registry=registry)
    return registry, gauge


def share(registry: CollectorRegistry, tenant: str, quota: str) -> float | None:
    return registry.get_sample_value("tokenyard_tenant_quota_usage_ratio", {"tenant": tenant, "quota": quota})


def test_shares_of_every_tenant_limit_include_reservations_in_flight(store: Store) -> None:
    set_quota(store, "tenant", "研发", QuotaChange(calls=10, tokens=1000, cost=Decimal("2"), period="day"))
    set_quota(store, "key", "ty-key1", QuotaChange(calls=3, period="day"))  # key quotas: no series
    service = QuotaService(store, SqlCounters(store))
    settled = service.reserve("研发", "ty-key1", Amounts(calls=1, tokens=500, cost_micros=500_000))
    service.settle(settled, Amounts(calls=1, tokens=100, cost_micros=250_000))
    service.reserve("研发", "ty-key1", Amounts(calls=1, tokens=800))  # still running
    registry, gauge = new_gauge()
    assert report_once(service, gauge) == 3
    assert share(registry, "研发", "calls") == pytest.approx(0.2)
    assert share(registry, "研发", "tokens") == pytest.approx(0.9)
    assert share(registry, "研发", "cost") == pytest.approx(0.125)
    assert share(registry, "ty-key1", "calls") is None


def test_redis_counters_feed_the_gauge_too(store: Store) -> None:
    if store.kind != "sqlite":
        pytest.skip("the counters are in Redis; one kind of store for the limits is enough")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    prefix = "ty-test-gauge-" + store.describe()[-8:] + ":"
    try:
        set_quota(store, "tenant", "acme", QuotaChange(calls=4, period="month"))
        service = QuotaService(store, RedisCounters(client, prefix))
        for _ in range(3):
            service.reserve("acme", None, Amounts(calls=1))
        registry, gauge = new_gauge()
        report_once(service, gauge)
        assert share(registry, "acme", "calls") == pytest.approx(0.75)
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


async def test_the_refresher_keeps_going_after_a_failed_read(store: Store) -> None:
    set_quota(store, "tenant", "acme", QuotaChange(calls=2, period="day"))
    service = QuotaService(store, SqlCounters(store))
    registry, gauge = new_gauge()
    failures = {"left": 1}
    real = service.tenant_usage

    def flaky() -> list[tuple[str, str, float]]:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("store away")
        return real()

    service.tenant_usage = flaky  # type: ignore[method-assign]
    task = asyncio.create_task(keep_quota_gauge(service, gauge, interval=0.01))
    for _ in range(200):
        if share(registry, "acme", "calls") is not None:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert share(registry, "acme", "calls") == 0.0
