"""worker.memory: the heap goes back to the system once the engine is idle after work, and only then."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tokenyard.engine.base import EngineStats
from tokenyard.worker import memory
from tokenyard.worker.memory import IdleTrim, trim_heap


def rss_mib() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def stats(running: int = 0, waiting: int = 0, generated: float = 0.0) -> EngineStats:
    return EngineStats(num_running=running, num_waiting=waiting, extra={"tokens_generated": generated})


def test_a_trim_is_due_once_after_work_and_never_while_busy() -> None:
    current: list[EngineStats | None] = [None]
    trim = IdleTrim(lambda: current[0], interval=1.0)
    assert not trim.due()  # still loading
    current[0] = stats()
    assert not trim.due()  # loaded, no work yet
    current[0] = stats(running=3, generated=40)
    assert not trim.due()  # busy
    current[0] = stats(waiting=1, generated=40)
    assert not trim.due()
    current[0] = stats(generated=40)
    assert trim.due()
    assert not trim.due()  # nothing new since
    current[0] = stats(generated=41)
    assert trim.due()


async def test_the_task_trims_when_due(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "trim_heap", lambda: calls.append(1) or True)
    trim = IdleTrim(lambda: stats(generated=5), interval=0.01)
    trim.start()
    await asyncio.sleep(0.2)
    await trim.stop()
    assert calls == [1]


def test_trim_heap_returns_freed_pages() -> None:
    chunks = [bytearray(4096) for _ in range(40_000)]  # ~160 MiB from malloc's heap, not mmap
    held = rss_mib()
    del chunks[:-1]  # the last one stays, so the heap's top cannot shrink by itself
    assert rss_mib() > held - 40  # glibc keeps what was freed inside its heap
    assert trim_heap()
    assert rss_mib() < held - 100
