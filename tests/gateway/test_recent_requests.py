"""The dashboard's ring of recent requests: buckets, rates and exact percentiles, with a fake clock."""

from __future__ import annotations

from datetime import datetime, timezone

from tokenyard.gateway.recent_requests import RecentRequests, percentiles
from tokenyard.protocol.outcome import RequestOutcome


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def outcome(latency: float, ttft: float | None = None, status: int = 200, tokens: int = 0) -> RequestOutcome:
    return RequestOutcome(
        record_id="r",
        request_id="q",
        method="POST",
        endpoint="/v1/chat/completions",
        started_at=datetime.now(timezone.utc),
        status=status,
        latency_s=latency,
        ttft_s=ttft,
        completion_tokens=tokens,
    )


def test_percentiles_are_nearest_rank_over_the_samples() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values).model_dump() == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentiles([3.0]).model_dump() == {"p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert percentiles([]).p50 is None


def test_samples_fall_into_their_buckets_with_rates_and_errors() -> None:
    clock = Clock(1000.0)
    recent = RecentRequests(window_s=60, clock=clock)
    recent.record(outcome(0.5, ttft=0.1, tokens=20))
    clock.now = 1012.0
    recent.record(outcome(1.5, ttft=0.3, tokens=10))
    recent.record(outcome(0.2, status=429))
    series = recent.series(30, 10)
    assert [b.start for b in series.buckets] == [990.0, 1000.0, 1010.0]
    assert [b.requests for b in series.buckets] == [0, 1, 2]
    assert [b.errors for b in series.buckets] == [0, 0, 1]
    assert series.buckets[2].requests_per_s == 0.2 and series.buckets[2].tokens_per_s == 1.0
    assert series.buckets[2].ttft_s.p50 == 0.3  # the refused request had no first token
    assert series.total.requests == 3 and series.total.latency_s.p99 == 1.5


def test_old_samples_leave_the_window_and_the_ring_is_bounded() -> None:
    clock = Clock(0.0)
    recent = RecentRequests(window_s=60, max_samples=3, clock=clock)
    for _ in range(5):
        recent.record(outcome(1.0))
    assert recent.series(60, 10).total.requests == 3
    clock.now = 100.0
    recent.record(outcome(2.0))
    assert recent.series(600, 10).total.requests == 1  # asked for more than the window: gets the window


def test_only_model_work_counts() -> None:
    recent = RecentRequests(clock=Clock(10.0))
    recent.record(outcome(0.01).model_copy(update={"method": "GET", "endpoint": "/v1/models"}))
    recent.record(outcome(0.01).model_copy(update={"endpoint": "/v1/votes"}))
    assert recent.series(60, 10).total.requests == 0
    recent.record(outcome(0.01).model_copy(update={"endpoint": "/v1/embeddings"}))
    assert recent.series(60, 10).total.requests == 1
