"""The limiters: the same behaviour in memory and in the real Redis (one Lua script per check)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.databases import REDIS_URL
from tokenyard.governance.ratelimit import WINDOW_SECONDS, Check, Limiter, MemoryLimiter, RedisLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter(hold=30)
        return
    prefix = request.getfixturevalue("redis_prefix")
    client = aioredis.Redis.from_url(REDIS_URL)
    yield RedisLimiter(client, prefix, hold=30)
    await client.aclose()


async def test_rpm_admits_the_limit_then_says_how_long_to_wait(limiter: Limiter) -> None:
    rpm = [Check("rpm", "key:a:rpm", 3)]
    assert [await limiter.admit(f"r{i}", rpm) for i in range(3)] == [None, None, None]
    denial = await limiter.admit("r3", rpm)
    assert denial is not None and denial.check.kind == "rpm"
    assert WINDOW_SECONDS - 5 < denial.retry_after <= WINDOW_SECONDS
    assert await limiter.admit("other", [Check("rpm", "key:b:rpm", 3)]) is None  # another key's window


async def test_tpm_reservations_are_corrected_when_the_request_ends(limiter: Limiter) -> None:
    tpm = [Check("tpm", "key:a:tpm", 100, cost=80)]
    assert await limiter.admit("big", tpm) is None
    assert await limiter.admit("second", tpm) is not None  # 80 + 80 > 100
    await limiter.settle("big", tpm, used_tokens=10)  # it used far less than reserved
    assert await limiter.admit("second", tpm) is None  # 10 + 80 <= 100
    huge = await limiter.admit("huge", [Check("tpm", "key:a:tpm", 100, cost=500)])
    assert huge is not None and huge.retry_after == pytest.approx(WINDOW_SECONDS)


async def test_parallel_slots_are_released(limiter: Limiter) -> None:
    par = [Check("parallel", "tenant:t:parallel", 2)]
    assert await limiter.admit("a", par) is None
    assert await limiter.admit("b", par) is None
    assert await limiter.admit("c", par) is not None
    await limiter.settle("a", par, used_tokens=None)
    assert await limiter.admit("c", par) is None


async def test_admission_is_all_or_nothing(limiter: Limiter) -> None:
    tenant = Check("rpm", "tenant:t:rpm", 1)
    key = Check("rpm", "key:k:rpm", 5)
    assert await limiter.admit("a", [tenant, key]) is None
    denial = await limiter.admit("b", [tenant, key])
    assert denial is not None and denial.check == tenant
    for i in range(4):  # the refused request took nothing from the key's window
        assert await limiter.admit(f"k{i}", [key]) is None
    assert await limiter.admit("k5", [key]) is not None


async def test_the_window_moves() -> None:
    clock = Clock()
    limiter = MemoryLimiter(hold=30, clock=clock)
    rpm = [Check("rpm", "k:rpm", 2)]
    assert await limiter.admit("a", rpm) is None
    clock.now += 20
    assert await limiter.admit("b", rpm) is None
    denial = await limiter.admit("c", rpm)
    assert denial is not None and denial.retry_after == pytest.approx(40)
    clock.now += 40.01
    assert await limiter.admit("c", rpm) is None
    par = [Check("parallel", "k:par", 1)]
    assert await limiter.admit("p", par) is None
    clock.now += 31  # its release was lost: the slot expires after `hold`
    assert await limiter.admit("q", par) is None
