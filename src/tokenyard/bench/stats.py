"""Statistics of one benchmark level: pure functions over per-request timings, no I/O.

The definitions follow vLLM's `benchmark_serving` so figures compare across tools:
- TTFT: from sending the request to the first chunk that carries generated text;
- ITL (inter-token latency): the gaps between consecutive text-bearing chunks, pooled over requests;
- TPOT (time per output token): per request, (last chunk - first chunk) / (output tokens - 1), which
  stays meaningful when a server packs several tokens into one chunk;
- output tok/s: output tokens of the successful requests over the level's wall time (first send to
  last end), i.e. the throughput a closed-loop client saw, not a sum of per-request rates.
All times are seconds from `time.perf_counter()`; the summaries report milliseconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 90, 99)
MAX_ERROR_MESSAGES = 3


@dataclass
class RequestResult:
    """What one streaming request measured; `chunk_times` are arrival times of text-bearing chunks."""

    start: float
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    usage_completion_tokens: int | None = None  # from the server's `usage`, when it sent one
    usage_prompt_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def output_tokens(self) -> int:
        """Tokens from `usage` when known, else one per text chunk (servers mostly send one token a chunk)."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return len(self.chunk_times)

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def latency(self) -> float:
        return self.end - self.start

    def itls(self) -> list[float]:
        """Gaps between consecutive text chunks of this request."""
        times = self.chunk_times
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    def tpot(self) -> float | None:
        """Mean decode time per output token after the first; None with fewer than two tokens."""
        if len(self.chunk_times) < 2 or self.output_tokens < 2:
            return None
        return (self.chunk_times[-1] - self.chunk_times[0]) / (self.output_tokens - 1)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The `pct`-th percentile with linear interpolation between ranks (numpy's default); None if empty."""
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution_ms(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and percentiles of `values` (seconds) in milliseconds, rounded for reports."""
    if not values:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    summary = {"mean": sum(values) / len(values), **{f"p{p}": percentile(values, p) for p in PERCENTILES}}
    return {key: round(value * 1000, 2) for key, value in summary.items() if value is not None}


def token_count_source(results: Sequence[RequestResult]) -> str:
    """ "usage" when every successful request had the server's count, "chunks" when none did, else "mixed"."""
    counted = [r.usage_completion_tokens is not None for r in results if r.ok]
    if counted and all(counted):
        return "usage"
    return "mixed" if any(counted) else "chunks"


@dataclass
class LevelSummary:
    """The report for one concurrency level."""

    concurrency: int
    requests: int
    completed: int
    errors: int
    error_messages: list[str]
    duration_s: float
    output_tokens: int
    prompt_tokens: int | None
    output_tok_per_s: float
    requests_per_s: float
    token_count_source: str
    ttft_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    latency_ms: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _first_errors(results: Sequence[RequestResult]) -> list[str]:
    """The first few distinct error messages, in the order they happened."""
    messages: list[str] = []
    for result in sorted(results, key=lambda r: r.end):
        if result.error is not None and result.error not in messages:
            messages.append(result.error)
        if len(messages) == MAX_ERROR_MESSAGES:
            break
    return messages


def summarize(concurrency: int, results: Sequence[RequestResult]) -> LevelSummary:
    """Summarise one level; its wall time runs from the first request sent to the last one ended."""
    ok = [r for r in results if r.ok]
    duration = max(r.end for r in results) - min(r.start for r in results) if results else 0.0
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_counts = [r.usage_prompt_tokens for r in ok if r.usage_prompt_tokens is not None]
    return LevelSummary(
        concurrency=concurrency,
        requests=len(results),
        completed=len(ok),
        errors=len(results) - len(ok),
        error_messages=_first_errors(results),
        duration_s=round(duration, 3),
        output_tokens=output_tokens,
        prompt_tokens=sum(prompt_counts) if prompt_counts else None,
        output_tok_per_s=round(output_tokens / duration, 2) if duration > 0 else 0.0,
        requests_per_s=round(len(ok) / duration, 3) if duration > 0 else 0.0,
        token_count_source=token_count_source(results),
        ttft_ms=distribution_ms([t for r in ok if (t := r.ttft) is not None]),
        itl_ms=distribution_ms([gap for r in ok for gap in r.itls()]),
        tpot_ms=distribution_ms([t for r in ok if (t := r.tpot()) is not None]),
        latency_ms=distribution_ms([r.latency for r in ok]),
    )
