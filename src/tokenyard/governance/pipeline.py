"""The journal's two ends on the event loop: group-committed appends and a background drain.

Appends from many requests at once share one write and one fsync (group commit), run in a thread
so the event loop never waits on the disk. The drain takes batches after the journal's cursor and
hands them to a sink (the database writer); only when the sink returns is the cursor moved. A sink
that fails (the database is down) is retried with a growing pause while the journal keeps growing
and the gateway keeps serving; when it succeeds again the backlog goes out batch by batch.
Woken by an append, the drain waits `gather_interval` first, so that the records of many calls go
to the database in one transaction instead of one each (they are on disk already: waiting loses
nothing, and a full batch is written without the pause).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tokenyard.governance.journal import EncodedRecord, Journal, Record

logger = logging.getLogger(__name__)

Sink = Callable[[list[Record]], None]


class JournalPipeline:
    def __init__(
        self,
        journal: Journal,
        sink: Sink,
        *,
        batch_size: int = 500,
        idle_interval: float = 0.5,
        max_retry_interval: float = 5.0,
        gather_interval: float = 0.25,
    ) -> None:
        self.journal = journal
        self._sink = sink
        self._batch_size = batch_size
        self._idle_interval = idle_interval
        self._max_retry_interval = max_retry_interval
        self._gather_interval = gather_interval
        self._queue: list[tuple[Record | EncodedRecord, asyncio.Future[None]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.failures = 0  # consecutive failed batches: > 0 means the sink is down

    async def append(self, record: Record | EncodedRecord) -> None:
        """Returns once the record (a dict, or one already encoded as a JSON line) is on disk (fsync'd)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await asyncio.to_thread(self.journal.append, [record for record, _ in batch])
                except Exception as exc:  # a full or broken disk: the callers must hear of it
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                for _, future in batch:
                    future.set_result(None)
                self._wake.set()
        finally:
            self._flushing = False

    async def drain_once(self) -> int:
        """Send one batch to the sink and move the cursor; returns how many records went (0: none waiting)."""
        records, cursor = await asyncio.to_thread(self.journal.pending, self._batch_size)
        if records:
            await asyncio.to_thread(self._sink, records)
        if records or cursor != self.journal.cursor:
            await asyncio.to_thread(self.journal.commit, cursor)
        return len(records)

    async def run(self) -> None:
        """Drain forever (the gateway's background task)."""
        while True:
            try:
                sent = await self.drain_once()
                if self.failures:
                    logger.info("journal sink is back after %d failed attempts", self.failures)
                self.failures = 0
            except Exception as exc:
                self.failures += 1
                pause = min(self._max_retry_interval, 0.2 * 2 ** min(self.failures, 10))
                logger.warning(
                    "journal sink failed (%s); %d bytes wait; retrying in %.1f s", exc, self.journal.backlog(), pause
                )
                await asyncio.sleep(pause)
                continue
            if sent < self._batch_size and await self._woken_within(self._idle_interval):
                await asyncio.sleep(self._gather_interval)  # woken: let more calls' records gather

    async def _woken_within(self, seconds: float) -> bool:
        """Wait for `append` to wake the drain, at most `seconds`; True if it did.

        Not asyncio.wait_for: before Python 3.12 it drops a cancellation that arrives as the wait
        ends (CPython gh-86296), and `stop` cancels this task once and then waits for it."""
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wake.set()

        self._wake.clear()
        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()
        return not expired

    async def drain(self, timeout: float) -> bool:
        """Send everything waiting (on shutdown); False if the sink could not take it all in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                if await asyncio.wait_for(self.drain_once(), max(0.01, deadline - loop.time())) == 0:
                    return True
            except Exception as exc:
                logger.warning("journal drain on shutdown failed: %s", exc)
                await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
        return self.journal.backlog() == 0
