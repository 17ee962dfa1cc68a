"""The journal: durable appends, rotation, a torn tail cut on open, replay after a crash, at-least-once drain."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokenyard.governance.journal import Journal, JournalBusyError, Record
from tokenyard.governance.pipeline import JournalPipeline


def ids(records: list[Record]) -> list[int]:
    return [r["n"] for r in records]


def test_records_come_back_in_order_across_segments_and_spent_segments_go(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=200)
    for n in range(40):
        journal.append([{"n": n, "text": "日志"}])
    assert len(journal.segments()) > 3  # rotated
    first, cursor = journal.pending(25)
    assert ids(first) == list(range(25))
    journal.commit(cursor)
    rest, cursor = journal.pending(100)
    assert ids(rest) == list(range(25, 40))
    journal.commit(cursor)
    assert journal.pending(10)[0] == [] and journal.backlog() == 0
    assert len(journal.segments()) == 1  # only the active segment is left
    journal.close()


def test_uncommitted_records_are_read_again_after_reopening(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"n": n} for n in range(10)])
    _, cursor = journal.pending(4)
    journal.commit(cursor)
    journal.pending(4)  # taken but never committed: the consumer died before storing them
    journal.close()
    with Journal(tmp_path) as reopened:
        assert ids(reopened.pending(100)[0]) == list(range(4, 10))


def test_a_line_torn_by_a_crash_is_cut_and_appends_continue_cleanly(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"n": 1}])
    with (tmp_path / "seg-00000001.jsonl").open("ab") as handle:
        handle.write(b'{"n": 2, "tex')  # the process died mid-write
    journal.close()
    with Journal(tmp_path) as reopened:
        reopened.append([{"n": 3}])
        assert ids(reopened.pending(10)[0]) == [1, 3]


def test_a_journal_belongs_to_one_process_at_a_time(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with pytest.raises(JournalBusyError):
        Journal(tmp_path)
    journal.close()
    Journal(tmp_path).close()  # free again once closed


def test_records_survive_a_sigkill_right_after_append(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tokenyard.governance.journal import Journal
        journal = Journal(Path({str(tmp_path)!r}), segment_bytes=100)
        for n in range(20):
            journal.append([{{"n": n}}])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), timeout=60)
    assert process.returncode == -signal.SIGKILL
    with Journal(tmp_path) as reopened:  # the kernel released the dead process's lock
        assert ids(reopened.pending(100)[0]) == list(range(20))


class FlakySink:
    """Refuses the first `failures` batches (a database that is down), then stores idempotently."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.stored: dict[int, Record] = {}
        self.calls = 0

    def __call__(self, records: list[Record]) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database is down")
        for record in records:
            self.stored.setdefault(record["n"], record)


async def test_the_pipeline_keeps_accepting_while_the_sink_is_down_then_delivers_everything(tmp_path: Path) -> None:
    sink = FlakySink(failures=3)
    pipeline = JournalPipeline(Journal(tmp_path), sink, batch_size=7, idle_interval=0.05, max_retry_interval=0.05)
    runner = asyncio.create_task(pipeline.run())
    await asyncio.gather(*(pipeline.append({"n": n}) for n in range(50)))  # group-committed, all on disk
    assert await pipeline.drain(timeout=10)
    runner.cancel()
    pipeline.journal.close()
    assert sorted(sink.stored) == list(range(50)) and sink.calls > 3
    assert pipeline.failures == 0 and pipeline.journal.backlog() == 0


async def test_drain_on_shutdown_reports_a_sink_that_stays_down(tmp_path: Path) -> None:
    sink = FlakySink(failures=10**6)
    pipeline = JournalPipeline(Journal(tmp_path), sink)
    await pipeline.append({"n": 1})
    assert not await pipeline.drain(timeout=0.3)
    pipeline.journal.close()
    # Nothing is lost: the next start finds the record waiting.
    with Journal(tmp_path) as reopened:
        assert ids(reopened.pending(10)[0]) == [1]


async def test_the_drain_gathers_the_records_of_calls_that_finish_close_together(tmp_path: Path) -> None:
    sink = FlakySink(failures=0)
    pipeline = JournalPipeline(Journal(tmp_path), sink, idle_interval=30, gather_interval=1.0)
    runner = asyncio.create_task(pipeline.run())
    for n in range(5):  # five separate appends (five fsyncs), well within the gathering second
        await pipeline.append({"n": n})
    deadline = asyncio.get_running_loop().time() + 10
    while len(sink.stored) < 5 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    pipeline.journal.close()
    assert sorted(sink.stored) == list(range(5)) and sink.calls == 1  # one database transaction, not five


async def test_the_drain_stops_when_cancelled_just_as_a_record_wakes_it(tmp_path: Path) -> None:
    """Shutdown cancels the drain once and waits for it: a wake-up landing in the same instant must
    not swallow the cancellation (asyncio.wait_for did, before Python 3.12)."""
    pipeline = JournalPipeline(Journal(tmp_path), FlakySink(failures=0), idle_interval=30, gather_interval=0.01)
    runner = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0.1)  # idle, waiting to be woken
    pipeline._wake.set()  # what append does
    runner.cancel()
    done, _ = await asyncio.wait({runner}, timeout=2)
    pipeline.journal.close()
    assert runner in done and runner.cancelled()


def test_an_encoded_record_is_written_as_it_is_and_read_back_as_json(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal") as journal:
        journal.append([{"n": 1}, '{"n":2,"text":"日志"}'.encode()])
        with pytest.raises(ValueError, match="one line"):
            journal.append([b'{"n":3}\n{"n":4}'])
        records, _ = journal.pending(10)
    assert records == [{"n": 1}, {"n": 2, "text": "日志"}]
