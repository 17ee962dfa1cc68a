"""The first generation engine: a transformers causal LM driven one decode step at a time, round robin.

One dedicated thread owns the model. Each round it admits waiting requests (FIFO, up to
`max_batch_size` running), then gives every running request one forward pass: the whole prompt the
first time (prefill), one token afterwards, each request with its own transformers KV cache. So
concurrent streams interleave and all make progress, without batching (a continuous-batching engine
replaces this one later behind the same `GenerationEngine` interface). Outputs cross to asyncio with
`loop.call_soon_threadsafe` into a per-request queue; closing the `generate` iterator aborts the
request before its next step.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokenyard.engine.base import EngineStats, GenerationOutput, PromptTokenizer, SamplingParams
from tokenyard.engine.models import model_context_length
from tokenyard.engine.sampling import make_generator, sample_next_token
from tokenyard.engine.sequence import Sequence, validate_request
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.errors import InvalidRequestError, ModelLoadError, OverloadedError, TokenyardError, WorkerError

logger = logging.getLogger(__name__)
_EMA_WEIGHT = 0.2  # of the newest sample, for tokens/s and request duration
# What the engine thread hands a consumer: an output, an error, or None when the request was aborted.
_Item = GenerationOutput | TokenyardError | None


@dataclass
class _Request:
    """A sequence plus what this engine needs to run it; only the engine thread touches `cache`."""

    sequence: Sequence
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[_Item]
    generator: torch.Generator
    cache: Any = None
    started_at: float = 0.0
    aborted: bool = False

    @property
    def request_id(self) -> str:
        return self.sequence.request_id


class SimpleGenerationEngine:
    """`engine.base.GenerationEngine` over a Hugging Face `AutoModelForCausalLM`."""

    def __init__(
        self,
        model: Any,
        tokenizer: HFPromptTokenizer,
        *,
        context_length: int,
        max_batch_size: int,
        max_queue_length: int,
    ) -> None:
        self.tokenizer: PromptTokenizer = tokenizer  # typed as the protocol says (the attribute is mutable)
        self._hf_tokenizer = tokenizer
        self.context_length = context_length
        self._model = model
        self._device = next(model.parameters()).device
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        self._eos_ids = tokenizer.eos_token_ids() | _config_eos_ids(model)
        # transformers 5 renamed the forward argument `past_key_values` to `cache`.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._max_batch_size = max_batch_size
        self._max_queue_length = max_queue_length
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._requests: dict[str, _Request] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._tokens_per_second = 0.0
        self._request_seconds = 0.0
        self._last_progress = time.monotonic()
        self._tokens_generated = 0

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int,
        max_queue_length: int,
        context_length: int | None = None,
    ) -> SimpleGenerationEngine:
        """Load the model and tokenizer from a Hugging Face folder onto `device`."""
        from transformers import AutoModelForCausalLM

        tokenizer = HFPromptTokenizer.from_folder(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        limit = model_context_length(model.config)
        if context_length is not None and context_length > limit:
            raise ModelLoadError(f"--context-length {context_length} exceeds the model's maximum of {limit} tokens")
        return cls(
            model,
            tokenizer,
            context_length=context_length or limit,
            max_batch_size=max_batch_size,
            max_queue_length=max_queue_length,
        )

    # --- the asyncio side ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tokenyard-engine", daemon=True)
            self._thread.start()

    async def shutdown(self) -> None:
        """Stop the thread; requests still queued or running end with a WorkerError."""
        self._stop_and_fail_all("the engine shut down before the request finished")
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _stop_and_fail_all(self, reason: str) -> None:
        with self._cond:
            self._stopping = True
            pending = list(self._requests.values())
            self._requests.clear()
            self._waiting.clear()
            self._running.clear()
            self._cond.notify_all()
        for request in pending:
            request.aborted = True
            _deliver(request, WorkerError(reason))

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[GenerationOutput, None]:
        """Stream one output per generated token; closing this iterator early aborts the request."""
        request = self._submit(request_id, prompt_token_ids, params)
        done = False
        try:
            while not done:
                item = await request.outputs.get()
                if item is None:  # aborted through abort(): the stream just ends
                    done = True
                    return
                if isinstance(item, TokenyardError):
                    done = True
                    raise item
                done = item.finish_reason is not None
                yield item
        finally:
            if not done:  # the consumer went away (client disconnected): free the slot now
                self._cancel(request_id)

    async def abort(self, request_id: str) -> None:
        """Stop a request; its `generate` iterator ends without a finish reason."""
        self._cancel(request_id)

    def stats(self) -> EngineStats:
        with self._cond:
            running, waiting = len(self._running), len(self._waiting)
            idle_for = time.monotonic() - self._last_progress if running or waiting else 0.0
            return EngineStats(
                num_running=running,
                num_waiting=waiting,
                tokens_per_second=self._tokens_per_second,
                seconds_since_progress=idle_for,
                extra={"tokens_generated": float(self._tokens_generated)},
            )

    def _submit(self, request_id: str, prompt: list[int], params: SamplingParams) -> _Request:
        if self._thread is None:
            raise RuntimeError("SimpleGenerationEngine.start() must be awaited before generate()")
        validate_request(prompt, params, vocab_size=self._vocab_size, context_length=self.context_length)
        sequence = Sequence(
            request_id,
            prompt,
            params,
            decode=self._hf_tokenizer.decode,
            eos_token_ids=self._eos_ids,
            context_length=self.context_length,
        )
        request = _Request(
            sequence=sequence,
            loop=asyncio.get_running_loop(),
            outputs=asyncio.Queue(),
            generator=make_generator(params.seed, self._device),
        )
        with self._cond:
            self._admit_or_refuse(request)
            self._cond.notify()
        return request

    def _admit_or_refuse(self, request: _Request) -> None:
        """Queue the request (lock held) or refuse it when too many are already waiting."""
        if self._stopping:
            raise WorkerError("the engine is shutting down")
        if request.request_id in self._requests:
            raise InvalidRequestError(f"request id {request.request_id} is already running", param="request_id")
        queued = len(self._running) + len(self._waiting) - self._max_batch_size  # beyond the free slots
        if queued >= self._max_queue_length:
            rounds = math.ceil((queued + 1) / self._max_batch_size)
            retry_after = max(1.0, rounds * (self._request_seconds or 1.0))
            raise OverloadedError(
                f"the worker is overloaded ({len(self._waiting)} requests waiting); retry later",
                retry_after=retry_after,
            )
        if not self._running and not self._waiting:
            self._last_progress = time.monotonic()
        self._requests[request.request_id] = request
        self._waiting.append(request)

    def _cancel(self, request_id: str) -> None:
        with self._cond:
            request = self._requests.pop(request_id, None)
            if request is None:
                return
            request.aborted = True  # the engine thread checks this before and after each step
            if request in self._waiting:
                self._waiting.remove(request)
            if request in self._running:
                self._running.remove(request)
        _deliver(request, None)  # wakes a consumer still waiting (abort() from elsewhere)

    # --- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():  # thread-local, so it is entered here, not by the caller
                while (batch := self._next_round()) is not None:
                    started = time.monotonic()
                    produced = sum(self._step_safely(request) for request in batch if not request.aborted)
                    self._record_round(produced, time.monotonic() - started)
        except BaseException:  # a bug in the loop itself: fail every request rather than leave them hanging
            logger.exception("the engine thread crashed")
            self._stop_and_fail_all("the engine stopped after an internal error")
            raise

    def _next_round(self) -> list[_Request] | None:
        """Wait for work, admit waiting requests into free slots, return who steps this round."""
        with self._cond:
            while not self._stopping and not self._running and not self._waiting:
                self._cond.wait()
            if self._stopping:
                return None
            while self._waiting and len(self._running) < self._max_batch_size:
                request = self._waiting.popleft()
                request.started_at = time.monotonic()
                self._running.append(request)
            return list(self._running)

    def _step_safely(self, request: _Request) -> int:
        """One step for one request; returns the number of tokens it produced (0 or 1)."""
        try:
            output = self._step(request)
        except Exception as exc:  # one request's failure (say, out of memory) must not stop the others
            logger.exception("request %s failed", request.request_id)
            self._retire(request, finished=False)
            _deliver(request, TokenyardError(f"generation failed: {exc}".splitlines()[0]))
            return 0
        if output.finish_reason is not None:
            self._retire(request, finished=True)
        if request.aborted:  # aborted while this step ran: drop the output and the KV cache
            request.cache = None
        else:
            _deliver(request, output)
        return 1

    def _step(self, request: _Request) -> GenerationOutput:
        logits = self._forward(request)  # [V]
        params = request.sequence.params
        token = sample_next_token(logits, request.generator, params.temperature, params.top_k, params.top_p)
        return request.sequence.append_token(token)

    def _forward(self, request: _Request) -> torch.Tensor:
        """Logits for the next token: prefill on the first step, then one token against the cache."""
        if request.cache is None:
            from transformers import DynamicCache

            request.cache = DynamicCache(config=self._model.config)
            new_ids = request.sequence.prompt_token_ids
        else:
            new_ids = request.sequence.output_token_ids[-1:]
        input_ids = torch.tensor([new_ids], dtype=torch.long, device=self._device)  # [1, S]
        kwargs = {self._cache_kwarg: request.cache}
        out = self._model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[0, -1]  # [V]

    def _retire(self, request: _Request, *, finished: bool) -> None:
        request.cache = None  # free the KV cache now, not when the consumer lets go
        with self._cond:
            if self._requests.get(request.request_id) is request:
                del self._requests[request.request_id]
            if request in self._running:
                self._running.remove(request)
            if finished:
                seconds = time.monotonic() - request.started_at
                self._request_seconds = _ema(self._request_seconds, seconds)

    def _record_round(self, produced: int, seconds: float) -> None:
        with self._cond:
            self._last_progress = time.monotonic()
            self._tokens_generated += produced
            if produced and seconds > 0:
                self._tokens_per_second = _ema(self._tokens_per_second, produced / seconds)


def _config_eos_ids(model: Any) -> set[int]:
    ids: set[int] = set()
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    return ids


def _deliver(request: _Request, item: _Item) -> None:
    try:
        request.loop.call_soon_threadsafe(request.outputs.put_nowait, item)
    except RuntimeError:  # the consumer's event loop is closed; nobody is listening any more
        request.aborted = True


def _ema(previous: float, sample: float) -> float:
    return sample if previous == 0 else (1 - _EMA_WEIGHT) * previous + _EMA_WEIGHT * sample
