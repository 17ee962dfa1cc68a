"""Metering end to end: usage records and rollups written by a real gateway; quotas that admit exactly
their limit under 50 simultaneous requests (SQLite, PostgreSQL, MariaDB, and two gateways sharing Redis);
a streaming client that disconnects is billed for what it received."""

from __future__ import annotations

import asyncio
import os
import secrets
from decimal import Decimal

import httpx
import pytest
import redis
from sqlalchemy import select

from tests.integration.governed import GovernedGateway, migrate, wait_for_models
from tests.integration.processes import Cluster, wait_until
from tokenyard.governance.quota_admin import QuotaChange, set_quota
from tokenyard.store import Store, UsageDaily, UsageRow

REDIS_URL = os.environ.get("TOKENYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PRICES = {"tiny-chat": {"per_call": "0.001", "per_1k_prompt": "0.5", "per_1k_completion": "1.5"}}


async def fire(urls: list[str], count: int) -> list[httpx.Response]:
    """`count` chat requests at once, spread over the gateways."""
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(
            *(client.post(f"{urls[n % len(urls)]}/v1/chat/completions", json=body) for n in range(count))
        )


def stored_usage(store: Store) -> list[UsageRow]:
    with store.session() as session:
        return list(session.scalars(select(UsageRow)))


def test_fifty_at_once_against_a_quota_of_five_calls(cluster: Cluster, database_url: str) -> None:
    migrate(database_url)
    store = Store(database_url)
    set_quota(store, "tenant", "default", QuotaChange(calls=5, period="day"))
    gateway = GovernedGateway(cluster, "gateway-quota", database_url, billing={"prices": PRICES}).start()
    try:
        wait_for_models(gateway)
        responses = asyncio.run(fire([gateway.url], 50))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) == 5 and statuses.count(429) == 45, gateway.service.logs()
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["code"] == "quota_exceeded" and int(refused.headers["retry-after"]) > 0
        assert wait_until(lambda: len(stored_usage(store)) == 50, timeout=20), gateway.service.logs()
        rows = stored_usage(store)
        billed = [r for r in rows if r.status == 200]
        assert len(billed) == 5 and all(r.calls_billed == 1 and r.cost_micros > 0 for r in billed)
        assert all(r.cost_micros == 0 for r in rows if r.status == 429)
        with store.session() as session:
            [rollup] = session.scalars(select(UsageDaily)).all()
        assert (rollup.requests, rollup.calls) == (50, 5)
        assert rollup.cost_micros == sum(r.cost_micros for r in billed)
        assert rollup.completion_tokens == sum(r.completion_tokens for r in billed)
    finally:
        gateway.service.stop()
        store.close()


def test_two_gateways_sharing_redis_admit_exactly_five(cluster: Cluster, sqlite_url: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    prefix = f"ty-test-{secrets.token_hex(6)}:"
    migrate(sqlite_url)
    store = Store(sqlite_url)
    set_quota(store, "tenant", "default", QuotaChange(calls=5, period="day"))
    shared = {"redis": {"url": REDIS_URL, "key_prefix": prefix}}
    gateways = [GovernedGateway(cluster, f"gateway-redis-{n}", sqlite_url, **shared).start() for n in range(2)]
    try:
        for gateway in gateways:
            wait_for_models(gateway)
        responses = asyncio.run(fire([g.url for g in gateways], 50))
        assert sorted(r.status_code for r in responses).count(200) == 5
        assert {r.status_code for r in responses} == {200, 429}
    finally:
        for gateway in gateways:
            gateway.service.stop()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
        store.close()


def test_a_streaming_client_that_leaves_is_billed_for_what_it_received(cluster: Cluster, sqlite_url: str) -> None:
    migrate(sqlite_url)
    store = Store(sqlite_url)
    gateway = GovernedGateway(cluster, "gateway-cut", sqlite_url, billing={"prices": PRICES}).start()
    try:
        wait_for_models(gateway)
        body = {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 1500,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            received = [next(lines) for _ in range(8)]  # the role chunk, then content chunks; then leave
        assert all(line.startswith("data: ") or not line for line in received)
        assert wait_until(lambda: len(stored_usage(store)) == 1, timeout=20), gateway.service.logs()
        [row] = stored_usage(store)
        assert row.status == 499 and row.stream
        assert 1 <= row.delivered_tokens <= row.generated_tokens
        assert row.billed_completion_tokens == row.delivered_tokens
        assert row.generated_tokens < 1500  # the engine stopped when the client left
        expected = (
            Decimal("0.001") + Decimal("0.5") * row.prompt_tokens / 1000 + Decimal("1.5") * row.delivered_tokens / 1000
        )
        assert row.cost_micros == int((expected * 10**6).quantize(Decimal(1)))
    finally:
        gateway.service.stop()
        store.close()
