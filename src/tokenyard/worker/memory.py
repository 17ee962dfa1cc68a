"""Hand the heap a burst of requests freed back to the system once the engine is idle.

Every engine step allocates working tensors and frees them (a prompt chunk's activations and attention
scores, logits). glibc serves them from its arenas and keeps what they free for later: after filling a
32,768-token KV cache with long prompts the chat worker held ~57 MiB more than its live data
(docs/engine.md, "Sizing memory"). `malloc_trim(0)` gives those pages back. It runs when the engine
has had nothing to do at a check after doing some work, in a thread (ctypes releases the GIL), so it
never competes with a step or stalls the event loop. Without glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tokenyard.engine.base import EngineStats
from tokenyard.engine.loader import trim_heap

logger = logging.getLogger(__name__)
WORK_COUNTERS = ("tokens_generated", "prompt_tokens_computed")  # chat engines' `EngineStats.extra`


class IdleTrim:
    """Every `interval` seconds: if the engine is idle and has worked since the last trim, trim the heap."""

    def __init__(self, stats: Callable[[], EngineStats | None], interval: float) -> None:
        self._stats = stats
        self._interval = interval
        self._trimmed_at_work = 0.0  # the engine's work counters at the last trim
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="idle-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def due(self) -> bool:
        """Whether a trim is due now: nothing running or waiting, and work done since the last one."""
        stats = self._stats()
        if stats is None or stats.num_running or stats.num_waiting:
            return False
        work = sum(stats.extra.get(name, 0.0) for name in WORK_COUNTERS)
        if work == self._trimmed_at_work:
            return False
        self._trimmed_at_work = work
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self.due():
                await asyncio.to_thread(trim_heap)
