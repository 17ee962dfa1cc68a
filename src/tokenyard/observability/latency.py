"""Latency histograms of a generation as a client sees it: time to first token, inter-token latency
and the whole request, with buckets shared by the worker and the gateway.

The buckets are fine below one second, with edges at 0.25, 0.5 and 0.75 s, so that "the 95th
percentile is above 500 ms" (the seed's alert) is decided by a bucket edge, not by interpolation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class LatencyHistograms:
    """The three histograms, under one name prefix (`tokenyard_` or `tokenyard_gateway_`)."""

    ttft: Histogram
    itl: Histogram
    e2e: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry, prefix: str, labels: list[str], where: str) -> LatencyHistograms:
        return cls(
            ttft=Histogram(
                f"{prefix}time_to_first_token_seconds",
                f"Seconds from a request's arrival at the {where} to its first generated token.",
                labels,
                buckets=TTFT_BUCKETS,
                registry=registry,
            ),
            itl=Histogram(
                f"{prefix}inter_token_latency_seconds",
                f"Seconds between consecutive generated tokens of a request, at the {where}.",
                labels,
                buckets=ITL_BUCKETS,
                registry=registry,
            ),
            e2e=Histogram(
                f"{prefix}e2e_request_latency_seconds",
                f"Seconds from a request's arrival at the {where} to its last byte.",
                labels,
                buckets=E2E_BUCKETS,
                registry=registry,
            ),
        )


@dataclass
class StreamTimer:
    """Times one generation: call `tokens(n)` as each batch of n new tokens arrives, then `finish()`.

    A batch of several tokens at once (a resumed stream's catch-up, a multi-token step) counts its
    gap once per token, divided evenly, so the histogram stays per token.
    """

    histograms: LatencyHistograms
    labels: tuple[str, ...]
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    last: float | None = None

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    def tokens(self, count: int) -> None:
        if count <= 0:
            return
        now = self.clock()
        if self.last is None:
            self.histograms.ttft.labels(*self.labels).observe(now - self.started)
            count -= 1
        elif count:
            gap = (now - self.last) / count
            itl = self.histograms.itl.labels(*self.labels)
            for _ in range(count):
                itl.observe(gap)
        self.last = now

    def finish(self) -> float:
        """Record the whole request's duration and return it."""
        seconds = self.clock() - self.started
        self.histograms.e2e.labels(*self.labels).observe(seconds)
        return seconds
