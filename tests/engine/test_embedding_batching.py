"""DynamicBatcher and EmbeddingCache with a fake forward; the engine's batching and cache on the tiny encoder.

The fake forward can be held at a gate, so a test decides exactly which calls queue behind a running
batch: batching is then deterministic, with no sleeps to tune.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import torch

from tokenyard.engine.embedding import SimpleEmbeddingEngine, padding_groups
from tokenyard.engine.embedding_batcher import SPLIT_FROM, DynamicBatcher, EmbeddingCache, cache_key
from tokenyard.errors import ErrorCode, InvalidRequestError, NoHealthyWorkerError

POISON = 666  # a token id the fake model fails on
SENTENCES = ["hello world", "the quick brown fox jumps over the lazy dog", "北京是中国的首都", "", "paris"]


class FakeForward:
    """Vectors [sum, len] per row; records every batch; waits at `gate` so callers can queue up behind it."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, rows: list[list[int]]) -> list[list[float]]:
        self.started.set()
        assert self.gate.wait(5), "the test never opened the gate"
        if any(POISON in row for row in rows):
            raise RuntimeError("the model failed on this input")
        self.batches.append(rows)
        return [[float(sum(row)), float(len(row))] for row in rows]

    async def hold_first_batch(self, batcher: DynamicBatcher, row: list[int]) -> asyncio.Task[list[list[float]]]:
        """Start a call whose forward blocks at the gate; calls made now queue behind it."""
        self.gate.clear()
        first = asyncio.create_task(batcher.embed([row]))
        assert await asyncio.to_thread(self.started.wait, 5)
        return first


@pytest.fixture
async def fake() -> FakeForward:
    return FakeForward()


@pytest.fixture
async def batcher(fake: FakeForward) -> AsyncIterator[DynamicBatcher]:
    batcher = DynamicBatcher(fake, max_batch_size=8, batch_wait_timeout=0.3, cache_size=4)
    yield batcher
    fake.gate.set()
    await batcher.shutdown()


async def queued(*calls: Awaitable[list[list[float]]]) -> list[asyncio.Task[list[list[float]]]]:
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)  # each runs up to its enqueue
    return tasks


async def test_calls_queued_behind_a_batch_run_together(fake: FakeForward, batcher: DynamicBatcher) -> None:
    first = await fake.hold_first_batch(batcher, [1])
    others = await queued(*(batcher.embed([[10 + i], [20 + i, 1]]) for i in range(4)))
    fake.gate.set()
    assert await first == [[1.0, 1.0]]
    results = await asyncio.gather(*others)
    assert results == [[[10.0 + i, 1.0], [21.0 + i, 2.0]] for i in range(4)]
    assert [len(rows) for rows in fake.batches] == [1, 8]  # the four calls' eight inputs in one forward
    assert batcher.counters() == {"batches": 2, "mean_batch_size": 4.5}


async def test_a_batch_never_exceeds_max_batch_size(fake: FakeForward, batcher: DynamicBatcher) -> None:
    first = await fake.hold_first_batch(batcher, [1])
    (big,) = await queued(batcher.embed([[i] for i in range(2, 22)]))
    fake.gate.set()
    await first
    assert [v for v, _ in await big] == [float(i) for i in range(2, 22)]
    assert [len(rows) for rows in fake.batches] == [1, 8, 8, 4]


async def test_the_wait_timeout_bounds_a_lone_requests_latency(fake: FakeForward, batcher: DynamicBatcher) -> None:
    first = await fake.hold_first_batch(batcher, [1])
    crowd = await queued(*(batcher.embed([[i]]) for i in range(2, 6)))
    fake.gate.set()
    await asyncio.gather(first, *crowd)
    # The last batch had four callers, so a lone one waits for company, but no longer than 0.3 s ...
    started = time.monotonic()
    await batcher.embed([[7]])
    assert 0.25 <= time.monotonic() - started < 1.0
    # ... and from then on a lone caller is expected to stay alone, and runs at once.
    started = time.monotonic()
    await batcher.embed([[8]])
    assert time.monotonic() - started < 0.2  # well under the 0.3 s wait, even on a busy CPU


async def test_a_large_crowd_is_served_in_halves(fake: FakeForward) -> None:
    batcher = DynamicBatcher(fake, max_batch_size=32, batch_wait_timeout=0.5, cache_size=0)
    try:
        first = await fake.hold_first_batch(batcher, [1])
        crowd = await queued(*(batcher.embed([[i]]) for i in range(2, 2 + SPLIT_FROM)))  # SPLIT_FROM + 1 at once
        fake.gate.set()
        await asyncio.gather(first, *crowd)
        assert [len(rows) for rows in fake.batches] == [1, SPLIT_FROM]
        # Half that crowd starts a batch at once: the other half is expected to be in flight elsewhere.
        started = time.monotonic()
        await asyncio.gather(*(batcher.embed([[100 + i]]) for i in range(SPLIT_FROM // 2 + 1)))
        assert time.monotonic() - started < 0.3  # well under the 0.5 s wait for company
        assert [len(rows) for rows in fake.batches] == [1, SPLIT_FROM, SPLIT_FROM // 2 + 1]
        # Below SPLIT_FROM the whole crowd is expected: fewer callers wait for the rest, up to the timeout.
        started = time.monotonic()
        await asyncio.gather(*(batcher.embed([[200 + i]]) for i in range(SPLIT_FROM // 2)))
        assert 0.45 <= time.monotonic() - started < 2.0
    finally:
        await batcher.shutdown()


async def test_repeated_inputs_hit_the_cache_and_the_oldest_are_evicted(
    fake: FakeForward, batcher: DynamicBatcher
) -> None:
    await batcher.embed([[1], [2], [3]])
    assert await batcher.embed([[2], [1]]) == [[2.0, 1.0], [1.0, 1.0]]
    assert len(fake.batches) == 1  # both from the cache
    await batcher.embed([[4], [5]])  # capacity 4: evicts [3], the least recently used
    await batcher.embed([[3]])
    assert fake.batches[-1] == [[3]]
    counters = batcher.cache.counters()
    assert counters == {"cache_hits": 2, "cache_misses": 6, "cache_evictions": 2, "cache_size": 4}


async def test_the_same_input_twice_in_a_batch_runs_once(fake: FakeForward, batcher: DynamicBatcher) -> None:
    assert await batcher.embed([[5, 6], [5, 6]]) == [[11.0, 2.0], [11.0, 2.0]]
    assert fake.batches == [[[5, 6]]]


async def test_cache_size_zero_turns_the_cache_off(fake: FakeForward) -> None:
    batcher = DynamicBatcher(fake, max_batch_size=8, batch_wait_timeout=0.0, cache_size=0)
    try:
        await batcher.embed([[1]])
        await batcher.embed([[1]])
    finally:
        await batcher.shutdown()
    assert fake.batches == [[[1]], [[1]]]
    assert batcher.cache.counters() == {"cache_hits": 0, "cache_misses": 0, "cache_evictions": 0, "cache_size": 0}


def test_the_cache_is_least_recently_used_first_out() -> None:
    cache = EmbeddingCache(2)
    cache.put(cache_key([1]), [0.5])
    cache.put(cache_key([2]), [0.25])
    assert cache.get(cache_key([1])) == [0.5]  # now [2] is the oldest
    cache.put(cache_key([3]), [0.125])
    assert cache.get(cache_key([2])) is None
    assert cache.get(cache_key([1])) == [0.5]
    assert cache_key([1, 2]) != cache_key([2, 1])


async def test_a_failing_input_does_not_poison_other_callers(fake: FakeForward, batcher: DynamicBatcher) -> None:
    first = await fake.hold_first_batch(batcher, [1])
    good, bad, also_good = await queued(batcher.embed([[2]]), batcher.embed([[3], [POISON]]), batcher.embed([[4]]))
    fake.gate.set()
    await first
    assert await good == [[2.0, 1.0]]
    assert await also_good == [[4.0, 1.0]]
    with pytest.raises(RuntimeError, match="failed on this input"):
        await bad
    assert await batcher.embed([[9]]) == [[9.0, 1.0]]  # and the batcher goes on


async def test_a_cancelled_callers_inputs_are_skipped(fake: FakeForward, batcher: DynamicBatcher) -> None:
    first = await fake.hold_first_batch(batcher, [1])
    (gone, stays) = await queued(batcher.embed([[2]]), batcher.embed([[3]]))
    gone.cancel()
    await asyncio.sleep(0)
    fake.gate.set()
    await first
    assert await stays == [[3.0, 1.0]]
    assert fake.batches == [[[1]], [[3]]]


async def test_shutdown_fails_queued_calls_and_refuses_new_ones(fake: FakeForward) -> None:
    batcher = DynamicBatcher(fake, max_batch_size=8, batch_wait_timeout=0.3, cache_size=4)
    running = await fake.hold_first_batch(batcher, [1])
    queued_calls = await queued(batcher.embed([[2]]), batcher.embed([[3]]))
    stopping = asyncio.create_task(batcher.shutdown())
    await asyncio.sleep(0.05)
    fake.gate.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert await running == [[1.0, 1.0]]  # the batch already running finishes
    for call in queued_calls:
        with pytest.raises(NoHealthyWorkerError, match="shut down"):
            await call
    with pytest.raises(NoHealthyWorkerError):
        await batcher.embed([[4]])


def test_padding_groups_split_only_where_padding_would_dominate() -> None:
    assert padding_groups([10, 11, 12, 15]) == [slice(0, 4)]
    assert padding_groups([10] * 15 + [256]) == [slice(0, 15), slice(15, 16)]
    assert padding_groups([3]) == [slice(0, 1)]


# --- the engine, on the tiny encoder ------------------------------------------------------------


@pytest.fixture
async def engine(tiny_embedding_model_dir: Path) -> AsyncIterator[SimpleEmbeddingEngine]:
    engine = SimpleEmbeddingEngine.load(
        tiny_embedding_model_dir, device=torch.device("cpu"), dtype=torch.float32, batch_wait_timeout=0.05
    )
    yield engine
    await engine.shutdown()


async def test_concurrent_calls_equal_one_by_one_results(tiny_embedding_model_dir: Path) -> None:
    alone = SimpleEmbeddingEngine.load(
        tiny_embedding_model_dir, device=torch.device("cpu"), dtype=torch.float32, cache_size=0
    )
    together = SimpleEmbeddingEngine.load(
        tiny_embedding_model_dir, device=torch.device("cpu"), dtype=torch.float32, cache_size=0
    )
    try:
        expected = [(await alone.embed_texts([s]))[0][0] for s in SENTENCES]
        results = await asyncio.gather(*(together.embed_texts([s]) for s in SENTENCES * 4))
        batches = together.stats().extra["batches"]
    finally:
        await alone.shutdown()
        await together.shutdown()
    assert batches < len(results)
    for (vectors, _), reference in zip(results, expected * 4, strict=True):
        assert vectors[0] == pytest.approx(reference, abs=1e-5)


async def test_text_and_token_ids_share_cache_entries(engine: SimpleEmbeddingEngine) -> None:
    (computed,), tokens = await engine.embed_texts(["hello world"])
    ids = engine._tokenizer.encode("hello world", add_special_tokens=False)
    (from_ids,), id_tokens = await engine.embed_token_ids([ids])
    (again,), _ = await engine.embed_texts(["hello world"])
    assert from_ids == again == computed  # the very floats the model computed
    assert id_tokens == tokens == 4
    extra = engine.stats().extra
    assert (extra["cache_hits"], extra["cache_misses"], extra["cache_size"]) == (2, 1, 1)
    assert (extra["batches"], extra["mean_batch_size"]) == (1, 1.0)


async def test_a_too_long_input_is_refused_before_queueing(engine: SimpleEmbeddingEngine) -> None:
    results = await asyncio.gather(
        engine.embed_texts(["hello world"]), engine.embed_texts(["hello " * 40]), return_exceptions=True
    )
    assert isinstance(results[0], tuple) and len(results[0][0]) == 1
    assert isinstance(results[1], InvalidRequestError)
    assert results[1].code == ErrorCode.CONTEXT_LENGTH_EXCEEDED.value
    assert engine.stats().extra["batches"] == 1


async def test_the_engine_refuses_calls_after_shutdown(tiny_embedding_model_dir: Path) -> None:
    engine = SimpleEmbeddingEngine.load(tiny_embedding_model_dir, device=torch.device("cpu"), dtype=torch.float32)
    await engine.embed_texts(["hello world"])
    await engine.shutdown()
    with pytest.raises(NoHealthyWorkerError):
        await engine.embed_texts(["paris"])
    with pytest.raises(NoHealthyWorkerError):
        await engine.embed_token_ids([[7]])


async def test_large_requests_are_tokenised_off_the_loop_with_the_same_result(engine: SimpleEmbeddingEngine) -> None:
    sentence = "the quick brown fox jumps over the lazy dog"
    (alone,), _ = await engine.embed_texts([sentence])
    many, tokens = await engine.embed_texts([sentence] * 100)  # 4,300 characters: tokenised in a thread
    assert tokens == 100 * 11
    assert all(vector == alone for vector in many)
    assert engine.stats().extra["cache_hits"] == 100  # the same token ids as the sentence tokenised alone
