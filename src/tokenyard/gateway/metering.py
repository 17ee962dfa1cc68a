"""The gateway's metering: the journal, its writer, the quota service and the outcome listener.

Started by the app's lifespan when metering is on (`Settings.metering_on`). Every finished call on
a metered endpoint becomes a journal entry (its usage record, and its conversation when logs are
on) that is on disk before the client has the last byte of its answer; the pipeline writes the
entries to the database in batches, off the request path. On shutdown the journal is drained for
up to `metering.drain_timeout` seconds; what is left is written at the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import redis

from tokenyard.config import Settings
from tokenyard.gateway.outcome import OutcomeListeners
from tokenyard.governance.billing import PriceTable
from tokenyard.governance.conversations import delete_older_than
from tokenyard.governance.journal import Journal, JournalBusyError
from tokenyard.governance.jsonl_sink import DailyJsonlSink
from tokenyard.governance.metering_config import LogsConfig
from tokenyard.governance.pipeline import JournalPipeline
from tokenyard.governance.quota_redis import RedisCounters
from tokenyard.governance.quotas import Counters, QuotaService, SqlCounters
from tokenyard.governance.records import BILLED_STATUSES, conversation_record, usage_record
from tokenyard.protocol.outcome import RequestOutcome
from tokenyard.store import Store

logger = logging.getLogger(__name__)
MAX_JOURNALS = 16  # journal directories tried when several processes share a port and a database
RETENTION_INTERVAL = 3600.0  # seconds between retention passes
SETTLE_INTERVAL = 0.2  # seconds between two applications of the deferred quota settlements
METERED_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


@dataclass
class Metering:
    prices: PriceTable
    pipeline: JournalPipeline
    quotas: QuotaService | None
    logs: LogsConfig
    drain_timeout: float
    store: Store
    runner: asyncio.Task[None] | None = None
    pruner: asyncio.Task[None] | None = None
    settler: asyncio.Task[None] | None = None

    async def settle_pending(self) -> bool:
        """Apply the deferred quota settlements (`QuotaService.defer`) in one step; False if the
        store refused them (they stay queued, and the counters err high until the next try)."""
        if self.quotas is None or not self.quotas.pending():
            return True
        try:
            await asyncio.to_thread(self.quotas.flush)
        except Exception as exc:
            logger.warning("quota settlement failed (%s); the reservations stay counted until it succeeds", exc)
            return False
        return True

    async def settle_forever(self) -> None:
        """Settle every SETTLE_INTERVAL seconds: a settlement only gives back the unused part of a
        reservation, so waiting never lets a quota be passed, and the calls of an interval on one
        counter cost one update instead of one each."""
        while True:
            await asyncio.sleep(SETTLE_INTERVAL)
            await self.settle_pending()

    async def on_outcome(self, outcome: RequestOutcome) -> None:
        """Journal the call's usage record (and conversation); returns once it is on disk."""
        if outcome.method != "POST" or outcome.endpoint not in METERED_ENDPOINTS:
            return
        usage = usage_record(outcome, self.prices)
        conversation = None
        if self.logs.enabled and outcome.status in BILLED_STATUSES:
            conversation = conversation_record(outcome, self.logs.content_policy(outcome.tenant), usage.cost)
        # Encoded by pydantic's own serialiser (the same JSON as model_dump(mode="json") through json.dumps,
        # at a fraction of the cost): the journal writes the line as it is.
        parts = [b'{"usage":', usage.model_dump_json().encode(), b',"conversation":']
        parts += [conversation.model_dump_json().encode() if conversation else b"null", b"}"]
        await self.pipeline.append(b"".join(parts))

    def start(self, listeners: OutcomeListeners) -> None:
        listeners.keep_content = listeners.keep_content or self.logs.enabled
        listeners.add(self.on_outcome)
        self.runner = asyncio.create_task(self.pipeline.run())
        if self.quotas is not None:
            self.settler = asyncio.create_task(self.settle_forever())
        if self.logs.retention_days is not None:
            self.pruner = asyncio.create_task(self.prune_forever(self.logs.retention_days))

    async def prune_forever(self, days: int) -> None:
        """Delete conversations past `logs.retention_days`, at start and then every RETENTION_INTERVAL."""
        while True:
            try:
                removed = await asyncio.to_thread(delete_older_than, self.store, days, self.logs.retention_batch)
                if removed:
                    logger.info("retention: deleted %d conversations older than %d days", removed, days)
            except Exception as exc:
                logger.warning("retention pass failed (%s); trying again later", exc)
            await asyncio.sleep(RETENTION_INTERVAL)

    async def stop(self) -> None:
        """Apply the settlements still queued and write what the journal holds (each bounded by
        drain_timeout), then stop the writer."""
        for task in (self.settler, self.runner, self.pruner):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while not await self.settle_pending() and loop.time() < deadline:
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
        if not await self.pipeline.drain(self.drain_timeout):
            logger.warning(
                "stopping with %d bytes of records in the journal %s: they are written at the next start",
                self.pipeline.journal.backlog(),
                self.pipeline.journal.directory,
            )
        self.pipeline.journal.close()


def quota_counters(settings: Settings, store: Store) -> Counters:
    if settings.redis.url:
        return RedisCounters(redis.Redis.from_url(settings.redis.url), settings.redis.key_prefix)
    return SqlCounters(store)


def open_journal(settings: Settings, store: Store) -> Journal:
    """The configured journal, or by default one per gateway port and database under HOME/journal:
    records journaled for one database are only ever written to that database. A directory another
    live process holds is skipped for the next free one (`-2`, `-3`, ...)."""
    if settings.metering.journal_dir is not None:
        return Journal(settings.metering.journal_dir)
    database = hashlib.sha256(store.describe().encode()).hexdigest()[:8]
    base = settings.home_dir() / "journal" / f"gateway-{settings.gateway.port}-{database}"
    for n in range(1, MAX_JOURNALS + 1):
        try:
            return Journal(base if n == 1 else base.with_name(f"{base.name}-{n}"))
        except JournalBusyError:
            continue
    raise JournalBusyError(f"every journal directory {base}[-N] is in use")


def build_metering(settings: Settings, store: Store) -> Metering:
    config = settings.metering
    journal = open_journal(settings, store)
    journal_dir = journal.directory
    logs = settings.logs
    jsonl = DailyJsonlSink(logs.jsonl_dir, logs.jsonl_keep_days) if logs.enabled and logs.jsonl_dir else None
    from tokenyard.governance.usage_writer import StoreWriter  # the ORM only where metering is on

    writer = StoreWriter(store, jsonl, rejected=journal_dir / "rejected.jsonl")
    pipeline = JournalPipeline(journal, writer, batch_size=config.batch_size)
    backlog = pipeline.journal.backlog()
    if backlog:
        logger.info("journal %s holds %d bytes from an earlier run; writing them now", journal_dir, backlog)
    quotas = QuotaService(store, quota_counters(settings, store)) if config.quotas else None
    if quotas is not None:
        quotas.refresh()  # the store is up at start (its schema was checked): know every quota from now on
    return Metering(PriceTable(settings.billing), pipeline, quotas, logs, config.drain_timeout, store)
