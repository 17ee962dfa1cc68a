"""The gateway's reservation batcher: calls that arrive while a batch is at the counters go together
in the next one, each gets its own answer, and a caller that left gets its room given back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from tokenyard.errors import QuotaExceededError
from tokenyard.gateway.quota import ReservationBatcher
from tokenyard.governance.quotas import Amounts, Reservation


class SlowQuotas:
    """Answers `reserve_many` once `gate` opens; refuses tenant 'poor'; fails while `down`."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.given_back: list[Reservation] = []
        self.gate = threading.Event()
        self.down = False

    def reserve_many(self, calls: Sequence[tuple[str, str | None, Amounts]]) -> list[Any]:
        self.batches.append([tenant for tenant, _, _ in calls])
        self.gate.wait(5)
        if self.down:
            raise ConnectionError("quota store unreachable")
        return [QuotaExceededError("no room") if t == "poor" else Reservation([], a) for t, _, a in calls]

    def defer(self, reservation: Reservation, actual: Amounts) -> None:
        self.given_back.append(reservation)


async def until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def test_calls_arriving_during_a_batch_go_together_in_the_next() -> None:
    async def scenario() -> None:
        quotas = SlowQuotas()
        batcher = ReservationBatcher(quotas)  # type: ignore[arg-type]
        first = asyncio.create_task(batcher.reserve("a", None, Amounts(calls=1)))
        await until(lambda: len(quotas.batches) == 1)  # the first goes at once, alone
        rest = [asyncio.create_task(batcher.reserve(t, None, Amounts(calls=1))) for t in ("b", "poor", "c")]
        await asyncio.sleep(0.05)
        quotas.gate.set()
        assert (await first).amounts == Amounts(calls=1)
        answers = await asyncio.gather(*rest, return_exceptions=True)
        assert quotas.batches == [["a"], ["b", "poor", "c"]]
        assert isinstance(answers[0], Reservation) and isinstance(answers[2], Reservation)
        assert isinstance(answers[1], QuotaExceededError)

    asyncio.run(scenario())


def test_a_store_failure_reaches_every_caller_of_the_batch_and_the_next_batch_runs() -> None:
    async def scenario() -> None:
        quotas = SlowQuotas()
        quotas.down = True
        quotas.gate.set()
        batcher = ReservationBatcher(quotas)  # type: ignore[arg-type]
        answers = await asyncio.gather(*(batcher.reserve(t, None, Amounts()) for t in "xy"), return_exceptions=True)
        assert all(isinstance(a, ConnectionError) for a in answers)
        quotas.down = False
        assert isinstance(await batcher.reserve("z", None, Amounts()), Reservation)

    asyncio.run(scenario())


def test_a_caller_that_left_while_waiting_gets_its_reservation_given_back() -> None:
    async def scenario() -> None:
        quotas = SlowQuotas()
        batcher = ReservationBatcher(quotas)  # type: ignore[arg-type]
        leaving = asyncio.create_task(batcher.reserve("a", None, Amounts(calls=1, tokens=9)))
        await until(lambda: len(quotas.batches) == 1)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        quotas.gate.set()
        await until(lambda: len(quotas.given_back) == 1)
        assert quotas.given_back[0].amounts == Amounts(calls=1, tokens=9)

    asyncio.run(scenario())
