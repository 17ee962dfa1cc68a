"""Scheduler with fake model outputs: budgets, chunked prefill, preemption, batch wait, queue limits."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import pytest

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.scheduler import ARRIVAL_GAP, Scheduler, SchedulerPlan
from tokenyard.engine.sequence import Sequence
from tokenyard.errors import OverloadedError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def decode(ids: Seq[int]) -> str:
    return "".join(chr(65 + i % 26) for i in ids)


def seq(prompt_len: int, name: str, max_tokens: int = 4, first: int = 0) -> Sequence:
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    prompt = list(range(first, first + prompt_len))
    return Sequence(name, prompt, params, decode=decode, eos_token_ids=(), context_length=10_000)


def make(
    num_blocks: int = 64, block_size: int = 4, batch: int = 4, budget: int = 16, queue: int = 8, wait: float = 0.0
) -> Scheduler:
    return Scheduler(
        BlockManager(num_blocks, block_size),
        max_batch_size=batch,
        max_num_batched_tokens=budget,
        max_queue_length=queue,
        batch_wait_timeout=wait,
        clock=Clock(),
    )


def step(scheduler: Scheduler) -> SchedulerPlan:
    """Schedule, 'run' the model (every sampled token is 1), update."""
    plan = scheduler.schedule()
    scheduler.update(plan, [1] * len(plan.sampled))
    return plan


def shape(plan: SchedulerPlan) -> list[tuple[str, int, bool]]:
    return [(chunk.seq.request_id, chunk.num_tokens, chunk.sample) for chunk in plan.chunks]


def test_prefill_then_decode_until_max_tokens() -> None:
    scheduler = make()
    s = seq(5, "a", max_tokens=3)
    scheduler.add(s)
    assert shape(step(scheduler)) == [("a", 5, True)]
    assert shape(step(scheduler)) == [("a", 1, True)]
    step(scheduler)
    assert s.finish_reason == "length" and not scheduler.has_work()
    assert scheduler.block_manager.num_free_blocks == 64


def test_long_prompt_is_chunked_and_interleaves_with_decode() -> None:
    scheduler = make(budget=8)
    scheduler.add(seq(3, "short", max_tokens=10))
    step(scheduler)
    scheduler.add(seq(20, "long", first=100))
    assert shape(step(scheduler)) == [("short", 1, True), ("long", 7, False)]
    assert shape(step(scheduler)) == [("short", 1, True), ("long", 7, False)]
    assert shape(step(scheduler)) == [("short", 1, True), ("long", 6, True)]
    assert shape(step(scheduler)) == [("short", 1, True), ("long", 1, True)]


def test_at_most_max_batch_size_run_and_the_rest_wait_in_order() -> None:
    scheduler = make(batch=2, budget=64)
    for name in "abc":
        scheduler.add(seq(3, name, max_tokens=2, first=ord(name) * 10))
    assert shape(step(scheduler)) == [("a", 3, True), ("b", 3, True)]
    assert [s.request_id for s in scheduler.waiting] == ["c"]
    step(scheduler)  # a and b finish
    assert shape(step(scheduler)) == [("c", 3, True)]


def test_full_queue_is_refused_with_retry_after() -> None:
    scheduler = make(batch=1, queue=2)
    scheduler.add(seq(3, "a"))
    scheduler.add(seq(3, "b"))
    with pytest.raises(OverloadedError) as raised:
        scheduler.add(seq(3, "c"))
    assert raised.value.retry_after is not None and raised.value.retry_after >= 1


def test_idle_engine_waits_to_fill_a_batch_but_not_longer_than_the_timeout() -> None:
    scheduler = make(batch=3, wait=0.1)
    clock = scheduler._clock
    assert isinstance(clock, Clock)
    scheduler.add(seq(3, "a"))
    plan = scheduler.schedule()
    assert plan.chunks == [] and plan.wait_seconds == pytest.approx(ARRIVAL_GAP)  # a lone request: one gap
    for i in range(1, 100):  # a steady burst keeps the batch open, but only up to the timeout
        clock.now = i * ARRIVAL_GAP / 2
        if len(scheduler.waiting) < 2:
            scheduler.add(seq(3, "b", first=50))
        plan = scheduler.schedule()
        if plan.chunks:
            break
        scheduler.waiting[-1].arrival_time = clock.now  # as if another request had just arrived
    assert clock.now == pytest.approx(0.1, abs=ARRIVAL_GAP)
    assert shape(plan) == [("a", 3, True), ("b", 3, True)]
    full = make(batch=2, wait=10.0)
    full.add(seq(3, "x"))
    full.add(seq(3, "y", first=50))
    assert len(full.schedule().chunks) == 2  # a full batch starts at once


def test_when_the_cache_is_full_new_requests_wait() -> None:
    scheduler = make(num_blocks=3, block_size=4, budget=64)
    scheduler.add(seq(8, "a", max_tokens=2))
    scheduler.add(seq(8, "b", max_tokens=2, first=50))
    assert shape(step(scheduler)) == [("a", 8, True)]
    assert [s.request_id for s in scheduler.waiting] == ["b"]
    step(scheduler)  # a finishes
    assert shape(step(scheduler)) == [("b", 8, True)]


def test_the_newest_request_is_preempted_and_recomputed_with_its_output() -> None:
    scheduler = make(num_blocks=4, block_size=4, budget=64)
    old, new = seq(7, "old", max_tokens=6), seq(7, "new", max_tokens=6, first=50)
    scheduler.add(old)
    scheduler.add(new)
    step(scheduler)  # both prefill into 2 blocks each: the cache is full
    step(scheduler)  # token 8 still fits
    plan = step(scheduler)  # both need a third block for token 9
    assert [s.request_id for s in plan.preempted] == ["new"]
    assert shape(plan) == [("old", 1, True)]
    while old.finish_reason is None:
        step(scheduler)
    plan = step(scheduler)
    # 7 prompt tokens plus its 2 outputs, less the first block, still in the prefix cache
    assert shape(plan) == [("new", 5, True)]
    while new.finish_reason is None:
        step(scheduler)
    assert len(new.output_token_ids) == 6


def test_identical_prompts_share_the_prefill_of_the_first() -> None:
    scheduler = make(budget=64)
    leader, follower = seq(9, "leader"), seq(9, "follower")
    scheduler.add(leader)
    scheduler.add(follower)
    assert shape(step(scheduler)) == [("leader", 9, True)]  # the follower is held back one step
    assert shape(step(scheduler)) == [("leader", 1, True), ("follower", 1, True)]
    assert follower.num_cached_tokens == 8
    assert follower.block_table[:2] == leader.block_table[:2]


def test_abort_during_a_step_frees_blocks_only_when_the_step_ends() -> None:
    scheduler = make()
    s = seq(9, "a", max_tokens=50)
    scheduler.add(s)
    plan = scheduler.schedule()
    scheduler.abort(s)  # the forward of `plan` may still write its blocks
    assert not scheduler.has_work() and scheduler.stats().num_running == 0
    assert scheduler.stats().kv_blocks_free == 61  # 9 tokens in blocks of 4
    assert scheduler.update(plan, [5]) == []  # nothing delivered for it; the step is over
    assert scheduler.stats().kv_blocks_free == 64


def test_abort_frees_blocks() -> None:
    scheduler = make()
    s = seq(9, "a", max_tokens=50)
    scheduler.add(s)
    step(scheduler)
    scheduler.abort(s)
    assert not scheduler.has_work()
    assert scheduler.block_manager.num_free_blocks == 64
