"""Quota settlements run after the answer has gone; shutdown waits for the ones still running."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tokenyard.gateway.metering import Metering
from tokenyard.governance.billing import BillingConfig, PriceTable
from tokenyard.governance.journal import Journal
from tokenyard.governance.metering_config import LogsConfig
from tokenyard.governance.pipeline import JournalPipeline
from tokenyard.store import Store


async def test_stop_waits_for_settlements_and_a_failed_one_does_not_stop_the_others(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    pipeline = JournalPipeline(Journal(tmp_path / "journal"), lambda records: None)
    metering = Metering(PriceTable(BillingConfig()), pipeline, None, LogsConfig(), 5.0, store)
    done: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.3)
        done.append("settled")

    async def broken() -> None:
        raise ConnectionError("database is down")

    metering.settle_later(broken())
    metering.settle_later(slow())
    assert len(metering.settling) == 2 and not done  # the caller did not wait
    await metering.stop()
    store.close()
    assert done == ["settled"] and not metering.settling
