"""Quota settlements are deferred and applied in batches; a failed batch stays queued and shutdown
applies what is left."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenyard.gateway.metering import Metering
from tokenyard.governance.billing import BillingConfig, PriceTable
from tokenyard.governance.journal import Journal
from tokenyard.governance.metering_config import LogsConfig
from tokenyard.governance.pipeline import JournalPipeline
from tokenyard.governance.quotas import Amounts, QuotaService, QuotaSpec, Target
from tokenyard.store import Store

TENANT = QuotaSpec("tenant", "acme", "day", max_calls=100)
KEY = QuotaSpec("key", "ty-abc", "day", max_tokens=10_000)


class FlakyCounters:
    """Counters in memory whose `adjust` fails while `down` is set."""

    def __init__(self) -> None:
        self.values: dict[Target, Amounts] = {}
        self.down = False
        self.adjust_calls = 0

    def reserve_many(self, requests: Sequence[tuple[list[Target], Amounts]]) -> list[QuotaSpec | None]:
        for targets, amounts in requests:
            for target in targets:
                self.values[target] = self.values.get(target, Amounts()).plus(amounts)
        return [None] * len(requests)

    def adjust(self, deltas: Mapping[Target, Amounts]) -> None:
        self.adjust_calls += 1
        if self.down:
            raise ConnectionError("database is down")
        for target, delta in deltas.items():
            self.values[target] = self.values.get(target, Amounts()).plus(delta)

    def used(self, spec: QuotaSpec, start: str) -> Amounts:
        return self.values.get((spec, start), Amounts())


def service_with(counters: FlakyCounters, tmp_path: Path) -> tuple[QuotaService, Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    service = QuotaService(store, counters, cache_seconds=3600)
    service._quotas = {("tenant", "acme"): TENANT, ("key", "ty-abc"): KEY}  # no table read needed
    service._read_at = float("inf")
    return service, store


def test_deferred_settlements_are_summed_per_counter_and_applied_in_one_step(tmp_path: Path) -> None:
    counters = FlakyCounters()
    service, store = service_with(counters, tmp_path)
    reserved = Amounts(calls=1, tokens=500, cost_micros=0)
    calls = [service.reserve("acme", "ty-abc", reserved) for _ in range(3)]
    for reservation in calls:
        service.defer(reservation, Amounts(calls=1, tokens=100))
    service.defer(calls[0], Amounts())  # a second settlement of the same call changes nothing
    tenant, key = calls[0].targets
    assert counters.values[tenant] == Amounts(calls=3, tokens=1500)  # not settled yet: errs high
    assert service.pending() == 2
    service.flush()
    assert counters.adjust_calls == 1
    assert counters.values[tenant] == counters.values[key] == Amounts(calls=3, tokens=300)
    assert service.pending() == 0
    store.close()


async def test_a_failed_flush_keeps_the_settlements_and_stop_applies_them(tmp_path: Path) -> None:
    counters = FlakyCounters()
    service, store = service_with(counters, tmp_path)
    pipeline = JournalPipeline(Journal(tmp_path / "journal"), lambda records: None)
    metering = Metering(PriceTable(BillingConfig()), pipeline, service, LogsConfig(), 5.0, store)
    reservation = service.reserve("acme", "ty-abc", Amounts(calls=1, tokens=800))
    service.defer(reservation, Amounts())  # the call failed: release everything
    counters.down = True
    assert await metering.settle_pending() is False
    tenant, _ = reservation.targets
    assert counters.values[tenant] == Amounts(calls=1, tokens=800)  # still counted: errs high
    assert service.pending() == 2  # kept for the next try
    counters.down = False
    await metering.stop()
    store.close()
    assert counters.values[tenant] == Amounts() and service.pending() == 0
