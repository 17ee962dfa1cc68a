"""The last minutes of gateway traffic, for the dashboard: request rate, latency and TTFT percentiles.

A bounded ring of small samples, one per finished /v1 request, fed by the outcome listeners
(gateway/outcome.py). Percentiles are exact over the samples of each time bucket (nearest rank),
which Prometheus histograms cannot give without a scrape history; Prometheus remains the place for
anything longer than `window_s`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from tokenyard.gateway.metering import METERED_ENDPOINTS
from tokenyard.protocol.outcome import RequestOutcome

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Sample:
    finished: float  # unix seconds
    latency_s: float
    ttft_s: float | None
    failed: bool
    completion_tokens: int


class Percentiles(BaseModel):
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class Bucket(BaseModel):
    start: float = Field(description="unix seconds at the bucket's start")
    requests: int
    errors: int
    requests_per_s: float
    tokens_per_s: float = Field(description="completion tokens of the requests that finished in the bucket, per second")
    latency_s: Percentiles
    ttft_s: Percentiles


class RequestSeries(BaseModel):
    window_s: float
    bucket_s: float
    buckets: list[Bucket]
    total: Bucket = Field(description="the whole window as one bucket")


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank percentiles (each one a value that was observed)."""
    if not values:
        return Percentiles()
    ordered = sorted(values)
    picks = {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES}
    return Percentiles(**picks)


def summarise(samples: Sequence[Sample], start: float, seconds: float) -> Bucket:
    return Bucket(
        start=start,
        requests=len(samples),
        errors=sum(s.failed for s in samples),
        requests_per_s=len(samples) / seconds,
        tokens_per_s=sum(s.completion_tokens for s in samples) / seconds,
        latency_s=percentiles([s.latency_s for s in samples]),
        ttft_s=percentiles([s.ttft_s for s in samples if s.ttft_s is not None]),
    )


class RecentRequests:
    """Samples of the last `window_s` seconds (at most `max_samples`, the oldest dropped first)."""

    def __init__(
        self, window_s: float = 900.0, max_samples: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.window_s = window_s
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._clock = clock

    def record(self, outcome: RequestOutcome) -> None:
        """An outcome listener: keep one sample of a finished generation or embedding request."""
        if outcome.method != "POST" or outcome.endpoint not in METERED_ENDPOINTS:
            return  # listing models or casting a vote is not model traffic
        now = self._clock()
        self._samples.append(
            Sample(now, outcome.latency_s, outcome.ttft_s, outcome.status >= 400, outcome.completion_tokens)
        )
        while self._samples and self._samples[0].finished < now - self.window_s:
            self._samples.popleft()

    def series(self, seconds: float, bucket_s: float) -> RequestSeries:
        """The last `seconds` (at most the window) in buckets of `bucket_s`, oldest first, every bucket present."""
        seconds = min(seconds, self.window_s)
        count = max(1, math.ceil(seconds / bucket_s))
        end = math.floor(self._clock() / bucket_s) * bucket_s + bucket_s  # the current bucket's end
        start = end - count * bucket_s
        grouped: list[list[Sample]] = [[] for _ in range(count)]
        for sample in self._samples:
            if sample.finished >= start:
                grouped[min(count - 1, int((sample.finished - start) // bucket_s))].append(sample)
        buckets = [summarise(group, start + i * bucket_s, bucket_s) for i, group in enumerate(grouped)]
        everything = [s for group in grouped for s in group]
        return RequestSeries(
            window_s=seconds, bucket_s=bucket_s, buckets=buckets, total=summarise(everything, start, count * bucket_s)
        )
