"""StreamTimer: time to first token, per-token gaps and the whole request, on a hand-driven clock."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tokenyard.observability.latency import LatencyHistograms, StreamTimer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sample(registry: CollectorRegistry, name: str, suffix: str, **labels: str) -> float:
    value = registry.get_sample_value(f"tokenyard_{name}_{suffix}", {"model": "m", **labels})
    return 0.0 if value is None else value


def test_first_token_then_per_token_gaps_then_total() -> None:
    registry, clock = CollectorRegistry(), Clock()
    timer = StreamTimer(LatencyHistograms.create(registry, "tokenyard_", ["model"], "test"), ("m",), clock=clock)
    clock.now += 0.3
    timer.tokens(1)  # TTFT 0.3 s
    clock.now += 0.1
    timer.tokens(1)  # one gap of 0.1 s
    clock.now += 0.6
    timer.tokens(2)  # two tokens at once: two gaps of 0.3 s
    timer.tokens(0)  # a keepalive-like empty output counts nothing
    clock.now += 0.2
    assert abs(timer.finish() - 1.2) < 1e-9
    assert _sample(registry, "time_to_first_token_seconds", "count") == 1
    assert abs(_sample(registry, "time_to_first_token_seconds", "sum") - 0.3) < 1e-9
    assert _sample(registry, "inter_token_latency_seconds", "count") == 3
    assert abs(_sample(registry, "inter_token_latency_seconds", "sum") - 0.7) < 1e-9
    assert _sample(registry, "inter_token_latency_seconds", "bucket", le="0.1") == 1
    assert _sample(registry, "inter_token_latency_seconds", "bucket", le="0.3") == 3
    assert _sample(registry, "e2e_request_latency_seconds", "count") == 1


def test_the_500_ms_threshold_is_a_bucket_edge() -> None:
    registry = CollectorRegistry()
    histograms = LatencyHistograms.create(registry, "tokenyard_", ["model"], "test")
    for histogram in (histograms.ttft, histograms.itl):
        edges = histogram.labels("m")._upper_bounds
        assert 0.5 in edges and 0.25 in edges
