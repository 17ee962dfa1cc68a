"""Quotas never overspend: 50 simultaneous reservations against 5 calls admit exactly 5, on SQLite,
PostgreSQL, MariaDB and on Redis shared by two services; settling and releasing move the counters."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from threading import Barrier

import pytest
import redis

from tokenyard.errors import QuotaExceededError
from tokenyard.governance.quota_admin import QuotaChange, get_quota, set_quota
from tokenyard.governance.quota_redis import RedisCounters
from tokenyard.governance.quotas import Amounts, QuotaService, SqlCounters
from tokenyard.store import Store

REDIS_URL = os.environ.get("TOKENYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the real Redis; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    prefix = f"ty-test-{secrets.token_hex(6)}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def race(services: list[QuotaService], attempts: int) -> int:
    """`attempts` reservations released at the same instant, spread over `services`; how many got through."""
    barrier = Barrier(attempts)

    def attempt(n: int) -> bool:
        barrier.wait()
        try:
            services[n % len(services)].reserve("acme", "ty-key1", Amounts(calls=1, tokens=10))
        except QuotaExceededError as exc:
            assert exc.code == "quota_exceeded" and exc.retry_after is not None and exc.retry_after > 0
            return False
        return True

    with ThreadPoolExecutor(attempts) as pool:
        return sum(pool.map(attempt, range(attempts)))


def test_fifty_at_once_against_five_calls_admit_exactly_five(store: Store) -> None:
    set_quota(store, "tenant", "acme", QuotaChange(calls=5, period="day"))
    service = QuotaService(store, SqlCounters(store))
    assert race([service], 50) == 5
    view = get_quota(store, "tenant", "acme")
    assert view is not None and view.used.calls == 5 and view.used.tokens == 50


def test_two_services_sharing_redis_admit_exactly_five(store: Store, redis_prefix: str) -> None:
    if store.kind != "sqlite":
        pytest.skip("the quotas' limits come from the store; one kind of store is enough here")
    set_quota(store, "tenant", "acme", QuotaChange(calls=5, period="month"))
    clients = [redis.Redis.from_url(REDIS_URL) for _ in range(2)]
    services = [QuotaService(store, RedisCounters(c, redis_prefix)) for c in clients]
    assert race(services, 50) == 5
    for client in clients:
        client.close()


def test_settle_replaces_the_reservation_and_release_gives_it_back(store: Store) -> None:
    set_quota(store, "tenant", "acme", QuotaChange(tokens=100, cost=Decimal("1.5"), period="month"))
    set_quota(store, "key", "ty-key1", QuotaChange(calls=3, period="day"))
    service = QuotaService(store, SqlCounters(store))
    first = service.reserve("acme", "ty-key1", Amounts(calls=1, tokens=60, cost_micros=500_000))
    with pytest.raises(QuotaExceededError, match="tenant 'acme'"):
        service.reserve("acme", "ty-key1", Amounts(calls=1, tokens=60))
    service.settle(first, Amounts(calls=1, tokens=12, cost_micros=120_000))  # it used less than it could
    second = service.reserve("acme", "ty-key1", Amounts(calls=1, tokens=60, cost_micros=500_000))
    service.settle(second, Amounts())  # failed: released
    tenant, key = get_quota(store, "tenant", "acme"), get_quota(store, "key", "ty-key1")
    assert tenant is not None and key is not None
    assert (tenant.used.tokens, tenant.used.cost_micros, key.used.calls) == (12, 120_000, 1)
    service.settle(first, Amounts(calls=1, tokens=99))  # settling twice changes nothing
    assert get_quota(store, "tenant", "acme").used.tokens == 12  # type: ignore[union-attr]


def test_a_quota_counts_per_period_and_refusals_say_when_it_renews(store: Store) -> None:
    set_quota(store, "tenant", "acme", QuotaChange(calls=1, period="day"))
    service = QuotaService(store, SqlCounters(store))
    late = datetime(2026, 12, 1, 23, 59, 30, tzinfo=timezone.utc)
    service.reserve("acme", None, Amounts(calls=1), now=late)
    with pytest.raises(QuotaExceededError) as refused:
        service.reserve("acme", None, Amounts(calls=1), now=late)
    assert refused.value.retry_after == 30
    service.reserve("acme", None, Amounts(calls=1), now=datetime(2026, 12, 2, 0, 0, 1, tzinfo=timezone.utc))


def test_tenants_without_quotas_are_not_counted(store: Store) -> None:
    service = QuotaService(store, SqlCounters(store))
    reservation = service.reserve("free", "ty-x", Amounts(calls=1, tokens=10**9))
    assert reservation.targets == []


@pytest.mark.parametrize("where", ["store", "redis"])
def test_deferred_settlements_of_many_calls_land_in_one_flush(store: Store, redis_prefix: str, where: str) -> None:
    if where == "redis" and store.kind != "sqlite":
        pytest.skip("the quotas' limits come from the store; one kind of store is enough here")
    set_quota(store, "tenant", "acme", QuotaChange(calls=10, tokens=1000, period="day"))
    set_quota(store, "key", "ty-key1", QuotaChange(tokens=5000, period="month"))
    client = redis.Redis.from_url(REDIS_URL) if where == "redis" else None
    counters = RedisCounters(client, redis_prefix) if client is not None else SqlCounters(store)
    service = QuotaService(store, counters)
    calls = [service.reserve("acme", "ty-key1", Amounts(calls=1, tokens=200)) for _ in range(4)]
    with pytest.raises(QuotaExceededError):  # 4 x 200 reserved: a fifth would pass 1,000 tokens
        service.reserve("acme", "ty-key1", Amounts(calls=1, tokens=201))
    for n, reservation in enumerate(calls):
        service.defer(reservation, Amounts(calls=1, tokens=10 * n) if n else Amounts())  # the first failed
    tenant, key = calls[0].targets
    assert counters.used(*tenant) == Amounts(calls=4, tokens=800)  # deferred: the counter errs high
    service.flush()
    assert counters.used(*tenant) == counters.used(*key) == Amounts(calls=3, tokens=60)
    service.reserve("acme", "ty-key1", Amounts(calls=1, tokens=900))  # the room came back
    if client is not None:
        client.close()


@pytest.mark.parametrize("where", ["store", "redis"])
def test_a_batch_of_reservations_answers_each_call_as_alone(store: Store, redis_prefix: str, where: str) -> None:
    """Reservations taken together (one transaction, one pipeline) refuse and admit as one at a time
    would; a call refused by its tenant's quota leaves nothing on its key's (taken first, the
    targets' order), where the next call of the same batch finds the room."""
    if where == "redis" and store.kind != "sqlite":
        pytest.skip("the quotas' limits come from the store; one kind of store is enough here")
    set_quota(store, "tenant", "acme", QuotaChange(tokens=300, period="day"))
    set_quota(store, "key", "ty-k", QuotaChange(tokens=500, period="day"))
    set_quota(store, "tenant", "other", QuotaChange(calls=1, period="month"))
    client = redis.Redis.from_url(REDIS_URL) if where == "redis" else None
    counters = RedisCounters(client, redis_prefix) if client is not None else SqlCounters(store)
    service = QuotaService(store, counters)
    results = service.reserve_many(
        [
            ("acme", "ty-k", Amounts(calls=1, tokens=400)),  # the key's 500 admit it, the tenant's 300 not
            ("acme", "ty-k", Amounts(calls=1, tokens=300)),  # fits only if the first left nothing on the key
            ("other", None, Amounts(calls=1)),
            ("other", None, Amounts(calls=1)),  # the month's one call is taken just before
            ("free", None, Amounts(calls=1, tokens=10**9)),  # no quota: not counted
        ]
    )
    assert [type(r).__name__ for r in results] == [
        "QuotaExceededError",
        "Reservation",
        "Reservation",
        "QuotaExceededError",
        "Reservation",
    ]
    assert "tenant 'acme'" in str(results[0]) and "tenant 'other'" in str(results[3])
    key, tenant = service.reserve_many([("acme", "ty-k", Amounts())])[0].targets  # type: ignore[union-attr]
    assert counters.used(*tenant) == counters.used(*key) == Amounts(calls=1, tokens=300)
    if client is not None:
        client.close()
