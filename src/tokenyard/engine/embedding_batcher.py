"""Dynamic batching across concurrent embedding calls, and an LRU cache of input embeddings.

Callers on the asyncio side hand in tokenised inputs; one dedicated thread takes up to
`max_batch_size` of them from a FIFO queue, runs one `forward` over the lot, and resolves each
caller's future (through `loop.call_soon_threadsafe`) once all of its inputs are done. Inputs the
cache already holds never enter the queue, and the same input twice in one batch runs once.

How long to wait for a batch to fill: once the first input arrives, the thread keeps collecting for at
most `batch_wait_timeout` seconds, but only while the batch holds fewer callers than it expects. The
expectation is the crowd: the most calls that were in the engine at once since the previous batch
formed (a lone sequential caller therefore never waits: a fixed wait would cap it at 1/timeout calls per
second). From `SPLIT_FROM` callers on, a batch expects half the crowd: then one half runs on the model
while the other half's answers and next requests travel through HTTP, instead of the whole crowd
alternating between the model and the network with one of them idle (+30 % sentences/s at 16 callers
through the gateway, docs/engine.md). When a crowd thins out, one batch waits the full timeout and the
expectation drops. The model knows nothing of this module: it only sees lists of token-id rows (see
`engine.embedding`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tokenyard.errors import NoHealthyWorkerError

logger = logging.getLogger(__name__)

Forward = Callable[[list[list[int]]], list[list[float]]]  # full token-id rows -> one vector each
_EMA_WEIGHT = 0.2  # of the newest batch, for tokens/s
# A crowd this large is served in two alternating halves. Halves of 8 or more: on a 2-core CPU a MiniLM
# sentence cost ~8 % more CPU in a batch of 8 than of 16, but ~30 % more in a batch of 4.
SPLIT_FROM = 16
_SHUTDOWN_MESSAGE = "The embedding engine shut down before this input ran; retry on another worker."


def cache_key(row: list[int]) -> bytes:
    """The exact token ids as 4-byte ints: as exact as a tuple, at a fraction of its memory."""
    return array("i", row).tobytes()


class EmbeddingCache:
    """A thread-safe LRU map from token ids to vectors; capacity 0 turns it off (and counts nothing).

    Vectors are stored as float32 arrays (what the model computed, so `get` returns the same floats)
    rather than lists of Python floats, which take six times the memory.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = self.misses = self.evictions = 0
        self._entries: OrderedDict[bytes, array[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> list[float] | None:
        if self.capacity == 0:
            return None
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return vector.tolist()

    def put(self, key: bytes, vector: list[float]) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._entries[key] = array("f", vector)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self.evictions += 1

    def counters(self) -> dict[str, float]:
        return {
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_evictions": self.evictions,
            "cache_size": len(self._entries),
        }


@dataclass(eq=False)
class _Call:
    """One caller's request: its result slots, filled by the batcher thread, and its future."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]
    vectors: list[list[float] | None]
    remaining: int
    settled: bool = False  # set by the batcher thread once it has scheduled a result or an error

    @property
    def done(self) -> bool:
        return self.settled or self.future.done()  # future.done(): the caller was cancelled

    def deliver(self, index: int, vector: list[float]) -> None:
        self.vectors[index] = vector
        self.remaining -= 1
        if self.remaining == 0:
            self._settle(self.vectors, None)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._settle(None, error)

    def _settle(self, vectors: list[list[float] | None] | None, error: BaseException | None) -> None:
        self.settled = True
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(_resolve, self.future, vectors, error)


def _resolve(
    future: asyncio.Future[list[list[float]]], vectors: list[list[float] | None] | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert vectors is not None and all(v is not None for v in vectors)
        future.set_result(vectors)  # type: ignore[arg-type]  # no None left, checked above


@dataclass(frozen=True, eq=False)
class _Item:
    """One input of one call, waiting in the queue."""

    call: _Call
    index: int
    row: list[int]
    key: bytes


@dataclass
class _Counters:
    batches: int = 0
    inputs: int = 0
    tokens_per_second: float = 0.0
    running_calls: int = 0
    pending_calls: int = 0
    expected_calls: int = 1  # how many callers the next batch waits for (see the module's docstring)
    crowd: int = 0  # the most calls in the engine at once since the last batch formed


class DynamicBatcher:
    """Queue inputs from concurrent callers and run them through `forward` in shared batches."""

    def __init__(self, forward: Forward, *, max_batch_size: int, batch_wait_timeout: float, cache_size: int) -> None:
        self.cache = EmbeddingCache(cache_size)
        self._forward = forward
        self._max_batch_size = max_batch_size
        self._wait = batch_wait_timeout
        self._queue: queue.Queue[_Item | None] = queue.Queue()  # None asks the thread to stop
        self._lock = threading.Lock()  # orders enqueues against shutdown, so nothing lands after the stop
        self._closed = False
        self._thread: threading.Thread | None = None
        self._counters = _Counters()

    async def embed(self, rows: list[list[int]]) -> list[list[float]]:
        """Vectors for full token-id rows (already validated), in order; cached rows skip the queue."""
        keys = [cache_key(row) for row in rows]
        vectors = [self.cache.get(key) for key in keys]
        if all(vector is not None for vector in vectors):
            return vectors  # type: ignore[return-value]  # every slot filled from the cache
        loop = asyncio.get_running_loop()
        call = _Call(loop, loop.create_future(), vectors, remaining=sum(v is None for v in vectors))
        misses = [_Item(call, i, rows[i], keys[i]) for i, vector in enumerate(vectors) if vector is None]
        # Shortest first, so a long request's inputs share batches with others of similar length.
        self._enqueue(call, sorted(misses, key=lambda item: len(item.row)))
        return await call.future

    async def shutdown(self) -> None:
        """Fail queued calls with a 503, let the running batch finish, and stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def num_running_and_waiting(self) -> tuple[int, int]:
        pending = self._counters.pending_calls
        running = min(self._counters.running_calls, pending)  # a batch's callers resolve before it ends
        return running, pending - running

    @property
    def tokens_per_second(self) -> float:
        return self._counters.tokens_per_second

    def counters(self) -> dict[str, float]:
        batches, inputs = self._counters.batches, self._counters.inputs
        return {"batches": batches, "mean_batch_size": inputs / batches if batches else 0.0}

    def _enqueue(self, call: _Call, items: list[_Item]) -> None:
        with self._lock:
            if self._closed:
                raise NoHealthyWorkerError(_SHUTDOWN_MESSAGE)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tokenyard-embed", daemon=True)
                self._thread.start()
            self._counters.pending_calls += 1
            self._counters.crowd = max(self._counters.crowd, self._counters.pending_calls)
            call.future.add_done_callback(self._call_finished)
            for item in items:
                self._queue.put(item)

    def _call_finished(self, _future: asyncio.Future[list[list[float]]]) -> None:
        self._counters.pending_calls -= 1  # on the caller's loop: results, errors and cancellations

    # --- the batcher thread -------------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            live = [item for item in batch if not item.call.done]  # skip callers that went away
            if not live:
                continue
            self._counters.running_calls = len({id(item.call) for item in live})
            try:
                self._run_batch(live)
            except Exception as exc:  # a bug here must fail the callers, never leave them waiting
                logger.exception("embedding batch failed")
                _fail(live, exc)
            finally:
                self._counters.running_calls = 0

    def _collect(self) -> list[_Item] | None:
        """The next batch: the first input, then more until full, out of time, or nobody else expected."""
        first = self._queue.get()
        if first is None or self._closed:  # closed: queued calls fail rather than start after shutdown
            self._stop([] if first is None else [first])
            return None
        batch, calls = [first], {id(first.call)}
        deadline = time.monotonic() + self._wait
        while len(batch) < self._max_batch_size:
            waiting = len(calls) < self._counters.expected_calls
            timeout = deadline - time.monotonic() if waiting else 0.0
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stop(batch)
                return None
            batch.append(item)
            calls.add(id(item.call))
        with self._lock:  # _enqueue raises the crowd on the event loop's thread
            crowd, self._counters.crowd = max(self._counters.crowd, len(calls)), 0
        self._counters.expected_calls = crowd if crowd < SPLIT_FROM else -(-crowd // 2)
        return batch

    def _run_batch(self, items: list[_Item]) -> None:
        """One forward for the batch; if it fails, each caller's inputs again alone, to find the culprit."""
        unique = {item.key: item.row for item in items}  # the same input twice runs once
        started = time.monotonic()
        try:
            vectors = dict(zip(unique, self._forward(list(unique.values())), strict=True))
        except Exception as exc:
            by_call: dict[int, list[_Item]] = {}
            for item in items:
                by_call.setdefault(id(item.call), []).append(item)
            if len(by_call) == 1:
                _fail(items, exc)
                return
            for group in by_call.values():
                self._run_batch(group)
            return
        self._record(len(items), sum(len(row) for row in unique.values()), time.monotonic() - started)
        for key, vector in vectors.items():
            self.cache.put(key, vector)
        for item in items:
            item.call.deliver(item.index, vectors[item.key])

    def _record(self, num_inputs: int, num_tokens: int, seconds: float) -> None:
        counters = self._counters
        counters.batches += 1
        counters.inputs += num_inputs
        if seconds > 0:
            rate, previous = num_tokens / seconds, counters.tokens_per_second
            counters.tokens_per_second = rate if previous == 0 else (1 - _EMA_WEIGHT) * previous + _EMA_WEIGHT * rate

    def _stop(self, collected: list[_Item]) -> None:
        """Fail the inputs collected so far and everything still queued: the engine is shutting down."""
        left = list(collected)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        for item in left:
            item.call.fail(NoHealthyWorkerError(_SHUTDOWN_MESSAGE))


def _fail(items: list[_Item], error: BaseException) -> None:
    for item in items:
        item.call.fail(error)
