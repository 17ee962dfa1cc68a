"""Iteration-level (continuous) batching under a token budget, after vLLM's scheduler and nano-vllm.

Each step, `schedule()` returns a `SchedulerPlan`: for every sequence that runs this step, how many
of its tokens to compute. A decoding sequence computes one token; a prompt computes as many as the
budget (`max_num_batched_tokens`) leaves, so a long prompt is split into chunks that share steps
with everyone's decode instead of stalling them. Decodes are planned first, then unfinished prompt
chunks, then newly admitted requests (FIFO, at most `max_batch_size` running, prefix-cache hits
first attached so only the uncached tail is computed). A chunk that completes its sequence's tokens
is sampled; `update(plan, tokens)` appends the sampled tokens and retires finished sequences.

When the KV cache cannot hold the next token of a running sequence, the newest running sequence is
preempted: its blocks are freed and it goes back to the head of the queue to be recomputed later
(its output so far is kept), so memory pressure slows requests down but never fails them. The queue
is bounded: beyond `max_queue_length` waiting requests, `add` raises `OverloadedError` with a
`retry_after` estimated from the queue depth and recent request durations.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tokenyard.engine.base import GenerationOutput, TokenLogprob
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.sequence import Sequence
from tokenyard.errors import OverloadedError

_EMA_WEIGHT = 0.2
ARRIVAL_GAP = 0.003  # seconds: arrivals closer than this belong to one burst worth batching


@dataclass
class ScheduledChunk:
    """Tokens `start:start + num_tokens` of `seq` are computed this step; `sample`: a token is drawn."""

    seq: Sequence
    start: int
    num_tokens: int
    sample: bool

    @property
    def wants_prompt_logits(self) -> bool:
        """Whether the runner should return this chunk's logits at every position, for prompt logprobs:
        the request asked, the chunk computes prompt positions whose next token is scored (or finishes
        the prompt: the transformers fallback computes the whole prompt only then), and the sequence
        has no output yet (a preempted one recomputing its prompt was scored the first time)."""
        seq = self.seq
        return (
            seq.params.prompt_logprobs is not None
            and not seq.output_token_ids
            and (self.start < len(seq.prompt_token_ids) - 1 or self.sample)
        )


@dataclass
class SchedulerPlan:
    """What one step runs. `wait_seconds` > 0 with no chunks: wait that long for the batch to fill."""

    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    wait_seconds: float = 0.0

    @property
    def num_tokens(self) -> int:
        return sum(chunk.num_tokens for chunk in self.chunks)

    @property
    def sampled(self) -> list[ScheduledChunk]:
        return [chunk for chunk in self.chunks if chunk.sample]


@dataclass(frozen=True)
class SchedulerStats:
    """The scheduler's and the KV cache's counts, read in one call under the engine's lock."""

    num_running: int
    num_waiting: int
    num_preemptions: int
    prompt_tokens_computed: int
    prompt_tokens_cached: int
    kv_blocks_free: int
    kv_blocks_total: int
    prefix_cache_hit_rate: float


class Scheduler:
    """Decides which sequences run each step; see the module docstring."""

    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_batch_size: int,
        max_num_batched_tokens: int,
        max_queue_length: int,
        batch_wait_timeout: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_num_batched_tokens < max_batch_size:
            raise ValueError(
                f"max_num_batched_tokens ({max_num_batched_tokens}) must be at least max_batch_size ({max_batch_size})"
            )
        self.block_manager = block_manager
        self.max_batch_size = max_batch_size
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_queue_length = max_queue_length
        self.batch_wait_timeout = batch_wait_timeout
        self._clock = clock
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.request_seconds = 0.0  # moving average of finished requests' durations
        self.num_preemptions = 0
        self.num_prompt_tokens_computed = 0  # prompt tokens run through the model
        self.num_prompt_tokens_cached = 0  # prompt tokens whose KV came from the prefix cache
        self._in_step: set[str] = set()  # request ids of the plan being run
        self._aborted_in_step: list[Sequence] = []  # their blocks are freed when the step ends

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a request, or refuse it with a retry hint when the queue is full."""
        if len(self.waiting) >= self.max_queue_length:
            rounds = math.ceil((len(self.waiting) + 1) / self.max_batch_size)
            raise OverloadedError(
                f"the worker is overloaded ({len(self.waiting)} requests waiting); retry later",
                retry_after=max(1.0, rounds * (self.request_seconds or 1.0)),
            )
        seq.arrival_time = self._clock()
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a request wherever it is: out of the counts at once, its blocks freed now or, if the
        step being run holds it (the forward may still write them), when that step ends."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
            if seq.request_id in self._in_step:
                self._aborted_in_step.append(seq)
            else:
                self.block_manager.deallocate(seq)

    def end_step(self) -> None:
        """The planned step is over (`update` calls it; call it alone for a step that failed): free
        what was aborted during it."""
        self._in_step = set()
        for seq in self._aborted_in_step:
            self.block_manager.deallocate(seq)
        self._aborted_in_step.clear()

    def stats(self) -> SchedulerStats:
        manager = self.block_manager
        return SchedulerStats(
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            num_preemptions=self.num_preemptions,
            prompt_tokens_computed=self.num_prompt_tokens_computed,
            prompt_tokens_cached=self.num_prompt_tokens_cached,
            kv_blocks_free=manager.num_free_blocks,
            kv_blocks_total=manager.num_blocks,
            prefix_cache_hit_rate=manager.hit_rate(),
        )

    # --- planning -----------------------------------------------------------------------------

    def schedule(self) -> SchedulerPlan:
        plan = SchedulerPlan()
        budget = self._schedule_running(plan, self.max_num_batched_tokens)
        wait = self._batch_wait()
        if wait > 0:
            plan.wait_seconds = wait
        elif not plan.preempted:  # after a preemption, memory is short: admit nobody new this step
            self._schedule_waiting(plan, budget)
        self._in_step = {chunk.seq.request_id for chunk in plan.chunks}
        return plan

    def _schedule_running(self, plan: SchedulerPlan, budget: int) -> int:
        # Decodes (one token left) first, so a long prompt's chunks never delay them.
        for seq in sorted(self.running, key=lambda s: s.num_tokens - s.num_computed_tokens > 1):
            if budget == 0 or seq not in self.running:  # seq may have been preempted by an earlier one
                continue
            start = seq.num_computed_tokens
            count = max(1, min(seq.num_tokens - start, budget, self._room_for(seq) - start))
            if not self._make_room(seq, start + count, plan):
                continue
            self._plan_chunk(plan, seq, count)
            budget -= count
        return budget

    def _room_for(self, seq: Sequence) -> int:
        """How many tokens `seq` could hold with its blocks plus every free block (a prompt chunk shrinks to it)."""
        manager = self.block_manager
        return (len(seq.block_table) + manager.num_free_blocks) * manager.block_size

    def _make_room(self, seq: Sequence, num_tokens: int, plan: SchedulerPlan) -> bool:
        """Preempt the newest running sequences until `seq` has slots for `num_tokens`; False if it was one."""
        while not self.block_manager.can_allocate(seq, num_tokens):
            victim = self.running[-1]
            self._preempt(victim, plan)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, plan: SchedulerPlan) -> None:
        self.running.remove(seq)
        self.block_manager.deallocate(seq)
        self.waiting.appendleft(seq)
        plan.chunks = [chunk for chunk in plan.chunks if chunk.seq is not seq]
        plan.preempted.append(seq)
        self.num_preemptions += 1

    def _batch_wait(self) -> float:
        """Seconds to keep gathering arrivals before starting an idle engine; 0 to go now.

        An idle engine waits while requests keep arriving (each within `ARRIVAL_GAP` of the last, as a
        burst does) until the batch is full or `batch_wait_timeout` has passed since the first; a lone
        request waits only one gap, so gathering a burst costs a single request no latency to speak of.
        """
        if self.running or not self.waiting or len(self.waiting) >= self.max_batch_size:
            return 0.0
        now = self._clock()
        until_timeout = self.waiting[0].arrival_time + self.batch_wait_timeout - now
        until_gap = self.waiting[-1].arrival_time + ARRIVAL_GAP - now
        return max(0.0, min(until_timeout, until_gap))

    def _schedule_waiting(self, plan: SchedulerPlan, budget: int) -> None:
        manager = self.block_manager
        for seq in list(self.waiting):
            if budget == 0 or len(self.running) >= self.max_batch_size:
                return
            # Prompt logprobs need every prompt position computed, so such requests reuse no cached prefix.
            reuse = seq.params.prompt_logprobs is None
            if reuse and manager.pending_prefix(seq):  # its prefix is being computed: share it next step
                continue
            cached = manager.match_prefix(seq) if reuse else 0
            count = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not manager.can_allocate(seq, seq.num_computed_tokens + count):
                manager.deallocate(seq)  # the cache is full: it waits, in order
                return
            self.waiting.remove(seq)
            self.running.append(seq)
            self.num_prompt_tokens_cached += min(cached, len(seq.prompt_token_ids))
            self._plan_chunk(plan, seq, count)
            budget -= count

    def _plan_chunk(self, plan: SchedulerPlan, seq: Sequence, count: int) -> None:
        start = seq.num_computed_tokens
        self.num_prompt_tokens_computed += max(0, min(count, len(seq.prompt_token_ids) - start))
        self.block_manager.allocate(seq, start + count)
        self.block_manager.mark_pending(seq, start + count)
        plan.chunks.append(ScheduledChunk(seq, start, count, sample=start + count == seq.num_tokens))

    # --- after the step -----------------------------------------------------------------------

    def update(
        self,
        plan: SchedulerPlan,
        token_ids: list[int],
        logprobs: list[TokenLogprob | None] | None = None,
    ) -> list[tuple[Sequence, GenerationOutput]]:
        """Record the step: KV computed, one sampled token per sampled chunk (in plan order)."""
        for chunk in plan.chunks:
            chunk.seq.num_computed_tokens = chunk.start + chunk.num_tokens
            self.block_manager.commit(chunk.seq)
        outputs = []
        running = set(map(id, self.running))
        for index, (chunk, token) in enumerate(zip(plan.sampled, token_ids, strict=True)):
            if id(chunk.seq) not in running:  # aborted while the step ran
                continue
            output = chunk.seq.append_token(token, logprobs[index] if logprobs else None)
            outputs.append((chunk.seq, output))
            if chunk.seq.is_finished:
                self._finish(chunk.seq)
        self.end_step()
        return outputs

    def _finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        self.block_manager.deallocate(seq)
        seconds = self._clock() - seq.arrival_time
        previous = self.request_seconds
        self.request_seconds = seconds if previous == 0 else (1 - _EMA_WEIGHT) * previous + _EMA_WEIGHT * seconds
