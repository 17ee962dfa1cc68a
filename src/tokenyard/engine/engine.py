"""The continuous-batching engine: `step()` = schedule, run, sample, update; a thread; an asyncio client.

After nano-vllm's `LLMEngine`. One thread owns the model and loops over `step()`; the asyncio side
(`BatchingGenerationEngine.generate`) submits a `Sequence` to the scheduler under a lock and reads
its outputs from a per-request queue filled with `loop.call_soon_threadsafe`. The scheduler is only
touched under the lock, and the model only by the thread, outside it, so submitting, aborting and
`stats()` never wait for a forward pass. A request aborted while its step runs is removed right
after that step (its blocks may be in use by the running forward).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import torch

from tokenyard.engine.base import (
    EngineStats,
    GenerationOutput,
    PromptTokenizer,
    SamplingParams,
    StepListener,
    TokenLogprob,
)
from tokenyard.engine.guided import GuideCompiler
from tokenyard.engine.model_runner import ModelRunner
from tokenyard.engine.sampling import make_generator, prompt_logprobs, sample_batch
from tokenyard.engine.scheduler import Scheduler, SchedulerPlan
from tokenyard.engine.sequence import Sequence, validate_request
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.errors import InvalidRequestError, TokenyardError, WorkerError

logger = logging.getLogger(__name__)
_EMA_WEIGHT = 0.2
_Item = GenerationOutput | TokenyardError | None  # None: the request was aborted


@dataclass
class _Request:
    sequence: Sequence
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[_Item]
    generator: torch.Generator
    aborted: bool = False
    prompt_logprobs: list[TokenLogprob | None] | None = None  # filled while the prompt runs, if asked


class BatchingGenerationEngine:
    """`engine.base.GenerationEngine` over a `Scheduler` and a `ModelRunner`."""

    def __init__(
        self,
        runner: ModelRunner,
        scheduler: Scheduler,
        tokenizer: HFPromptTokenizer,
        *,
        context_length: int,
        eos_token_ids: set[int],
    ) -> None:
        self.tokenizer: PromptTokenizer = tokenizer
        self._hf_tokenizer = tokenizer
        self.context_length = context_length
        self._runner, self._scheduler = runner, scheduler
        self._eos_ids = eos_token_ids
        self._guides = GuideCompiler(tokenizer.hf_tokenizer, vocab_size=runner.vocab_size, eos_token_ids=eos_token_ids)
        self._cond = threading.Condition()
        self._requests: dict[str, _Request] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._tokens_per_second = 0.0
        self._tokens_generated = 0
        self._last_progress = time.monotonic()
        self._step_listeners: list[StepListener] = []

    def add_step_listener(self, listener: StepListener) -> None:
        """Call `listener(seconds, num_sequences, num_tokens)` from the engine thread after every step;
        it must be quick and thread-safe (a Prometheus histogram is)."""
        self._step_listeners.append(listener)

    # --- the asyncio side ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tokenyard-engine", daemon=True)
            self._thread.start()

    async def shutdown(self) -> None:
        """Stop the thread; requests still queued or running end with a WorkerError."""
        self._stop_and_fail_all("the engine shut down before the request finished")
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[GenerationOutput, None]:
        """Stream one output per generated token; closing this iterator early aborts the request."""
        request = self._submit(request_id, prompt_token_ids, params)
        done = False
        try:
            while not done:
                item = await request.outputs.get()
                if item is None:
                    done = True
                    return
                if isinstance(item, TokenyardError):
                    done = True
                    raise item
                done = item.finish_reason is not None
                yield item
        finally:
            if not done:
                self._cancel(request_id)

    async def abort(self, request_id: str) -> None:
        self._cancel(request_id)

    def stats(self) -> EngineStats:
        with self._cond:
            counts = self._scheduler.stats()
            busy = counts.num_running or counts.num_waiting
            return EngineStats(
                num_running=counts.num_running,
                num_waiting=counts.num_waiting,
                tokens_per_second=self._tokens_per_second,
                seconds_since_progress=time.monotonic() - self._last_progress if busy else 0.0,
                kernel_path=self._runner.kernel_path,
                extra={
                    "tokens_generated": float(self._tokens_generated),
                    "kv_blocks_free": float(counts.kv_blocks_free),
                    "kv_blocks_total": float(counts.kv_blocks_total),
                    "prefix_cache_hit_rate": counts.prefix_cache_hit_rate,
                    "preemptions": float(counts.num_preemptions),
                    "prompt_tokens_computed": float(counts.prompt_tokens_computed),
                    "prompt_tokens_cached": float(counts.prompt_tokens_cached),
                },
            )

    def _submit(self, request_id: str, prompt: list[int], params: SamplingParams) -> _Request:
        if self._thread is None:
            raise RuntimeError("BatchingGenerationEngine.start() must be awaited before generate()")
        validate_request(prompt, params, vocab_size=self._runner.vocab_size, context_length=self.context_length)
        guide = self._guides.matcher(params.guide) if params.guide is not None else None  # a 400 if invalid
        sequence = Sequence(
            request_id,
            prompt,
            params,
            decode=self._hf_tokenizer.decode,
            eos_token_ids=self._eos_ids,
            context_length=self.context_length,
            guide=guide,
        )
        loop = asyncio.get_running_loop()
        request = _Request(sequence, loop, asyncio.Queue(), make_generator(params.seed, self._runner.device))
        with self._cond:
            if self._stopping:
                raise WorkerError("the engine is shutting down")
            if request_id in self._requests:
                raise InvalidRequestError(f"request id {request_id} is already running", param="request_id")
            if not self._scheduler.has_work():
                self._last_progress = time.monotonic()
            self._scheduler.add(sequence)  # raises OverloadedError when the queue is full
            self._requests[request_id] = request
            self._cond.notify()
        return request

    def _cancel(self, request_id: str) -> None:
        with self._cond:
            request = self._requests.pop(request_id, None)
            if request is None:
                return
            request.aborted = True
            self._scheduler.abort(request.sequence)
        _deliver(request, None)

    def _stop_and_fail_all(self, reason: str) -> None:
        with self._cond:
            self._stopping = True
            pending = list(self._requests.values())
            self._requests.clear()
            self._cond.notify_all()
        for request in pending:
            request.aborted = True
            _deliver(request, WorkerError(reason))

    # --- the engine thread --------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while (plan := self._next_plan()) is not None:
                    self.step(plan)
        except BaseException:
            logger.exception("the engine thread crashed")
            self._stop_and_fail_all("the engine stopped after an internal error")
            raise

    def _next_plan(self) -> SchedulerPlan | None:
        """Wait for work and return the next step's plan (lock held while planning)."""
        with self._cond:
            while not self._stopping:
                if not self._scheduler.has_work():
                    self._cond.wait()
                    continue
                plan = self._scheduler.schedule()
                if plan.chunks:
                    return plan
                self._cond.wait(timeout=plan.wait_seconds or 0.005)  # gathering a batch, or memory is short
            return None

    def step(self, plan: SchedulerPlan) -> None:
        """Run one planned step and deliver its tokens."""
        started = time.monotonic()
        try:
            tokens, logprobs = self._run(plan)
        except Exception as exc:  # a failed forward fails the step's requests, not the engine
            logger.exception("a step failed")
            self._fail_step(plan, TokenyardError(f"generation failed: {exc}".splitlines()[0]))
            return
        with self._cond:
            outputs = self._scheduler.update(plan, tokens, logprobs)  # frees what was aborted meanwhile
            deliveries = [(self._request_of(seq), output) for seq, output in outputs]
            for request, output in deliveries:
                if output.finish_reason is not None and request is not None:
                    self._requests.pop(request.sequence.request_id, None)
            seconds = time.monotonic() - started
            self._record(len(outputs), seconds)
        for listener in self._step_listeners:
            listener(seconds, len(plan.chunks), len(outputs))
        ready: list[tuple[_Request, _Item]] = []
        for request, output in deliveries:
            if request is not None and not request.aborted:
                if request.prompt_logprobs is not None and output.num_output_tokens == 1:
                    output.prompt_logprobs = request.prompt_logprobs
                ready.append((request, output))
        _deliver_all(ready)

    def _run(self, plan: SchedulerPlan) -> tuple[list[int], list[TokenLogprob | None]]:
        output = self._runner.run(plan)
        for prompt in output.prompt_logits:  # only for requests that asked for prompt logprobs
            if (request := self._request_of(prompt.chunk.seq)) is not None:
                _keep_prompt_logprobs(request, prompt.first, prompt.logits)
        sampled = plan.sampled
        if not sampled:
            return [], []
        generators = [self._generator(chunk.seq) for chunk in sampled]
        return sample_batch(output.logits, [chunk.seq for chunk in sampled], generators)  # logits: [N, V]

    def _request_of(self, seq: Sequence) -> _Request | None:
        """The live request `seq` belongs to; None once it is aborted (its id may be reused meanwhile)."""
        request = self._requests.get(seq.request_id)
        return request if request is not None and request.sequence is seq else None

    def _generator(self, seq: Sequence) -> torch.Generator:
        request = self._request_of(seq)
        return request.generator if request is not None else make_generator(None, self._runner.device)

    def _fail_step(self, plan: SchedulerPlan, error: TokenyardError) -> None:
        with self._cond:
            self._scheduler.end_step()
            failed = [self._request_of(chunk.seq) for chunk in plan.chunks]
            for chunk in plan.chunks:
                self._scheduler.abort(chunk.seq)
            for request in failed:
                if request is not None:
                    self._requests.pop(request.sequence.request_id, None)
        for request in failed:
            if request is not None:
                _deliver(request, error)

    def _record(self, produced: int, seconds: float) -> None:
        self._last_progress = time.monotonic()
        self._tokens_generated += produced
        if produced and seconds > 0:
            rate = produced / seconds
            previous = self._tokens_per_second
            self._tokens_per_second = rate if previous == 0 else (1 - _EMA_WEIGHT) * previous + _EMA_WEIGHT * rate


def _keep_prompt_logprobs(request: _Request, first: int, logits: torch.Tensor) -> None:
    """Score prompt tokens first+1.. from the logits of positions first.. (recomputing one is harmless)."""
    # logits: [S, V] for positions first .. first + S - 1
    prompt, k = request.sequence.prompt_token_ids, request.sequence.params.prompt_logprobs or 0
    if request.prompt_logprobs is None:
        request.prompt_logprobs = [None] * len(prompt)  # the first token has no logprob
    end = min(first + logits.shape[0], len(prompt) - 1)
    if end > first:
        scored = prompt_logprobs(logits[: end - first], prompt[first + 1 : end + 1], k)
        request.prompt_logprobs[first + 1 : end + 1] = scored


def _deliver_all(items: list[tuple[_Request, _Item]]) -> None:
    """A step's outputs with one wake-up per event loop, not one per request: at 64 sequences the
    worker's loop otherwise woke 64 times a step, each wake-up a write to its self-pipe and a pass of
    the loop. Each request's outputs keep their order: one callback per step, run in step order."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, _Item]]] = {}
    for request, item in items:
        by_loop.setdefault(request.loop, []).append((request, item))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the consumers' event loop is closed
            for request, _ in batch:
                request.aborted = True


def _put_all(batch: list[tuple[_Request, _Item]]) -> None:
    for request, item in batch:
        request.outputs.put_nowait(item)


def _deliver(request: _Request, item: _Item) -> None:
    _deliver_all([(request, item)])
