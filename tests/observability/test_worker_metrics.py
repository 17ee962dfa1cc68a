"""The worker's scrape-time series from EngineStats, and its step-time listener."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tokenyard.engine.base import EngineStats, StepListener
from tokenyard.observability.worker import WorkerMetrics, WorkerSnapshot
from tokenyard.protocol.internal import WorkerState

STATS = EngineStats(
    num_running=3,
    num_waiting=2,
    kernel_path="native",
    extra={
        "kv_blocks_total": 100.0,
        "kv_blocks_free": 25.0,
        "prompt_tokens_computed": 70.0,
        "prompt_tokens_cached": 30.0,
        "tokens_generated": 512.0,
        "preemptions": 1.0,
    },
)


class SteppingEngine:
    def __init__(self) -> None:
        self.listeners: list[StepListener] = []

    def add_step_listener(self, listener: StepListener) -> None:
        self.listeners.append(listener)


def _metrics(stats: EngineStats | None, state: WorkerState = WorkerState.HEALTHY) -> WorkerMetrics:
    snapshot = WorkerSnapshot(
        lambda: stats, lambda: state, device=lambda: "cpu", quantization=lambda: "int4", queue_capacity=256
    )
    return WorkerMetrics(CollectorRegistry(), "中文-chat", snapshot)


def test_engine_stats_become_vllm_like_series() -> None:
    registry = _metrics(STATS).registry
    model = {"model": "中文-chat"}

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**model, **labels})

    assert value("tokenyard_num_requests_running") == 3
    assert value("tokenyard_num_requests_waiting") == 2
    assert value("tokenyard_worker_queue_capacity") == 256
    assert value("tokenyard_kv_cache_usage_perc") == 0.75
    assert value("tokenyard_prompt_tokens_total") == 100
    assert value("tokenyard_prefix_cache_queries_total") == 100
    assert value("tokenyard_prefix_cache_hits_total") == 30
    assert value("tokenyard_generation_tokens_total") == 512
    assert value("tokenyard_num_preemptions_total") == 1
    assert value("tokenyard_worker_state", state="healthy") == 1
    assert value("tokenyard_engine_info", kernel_path="native", device="cpu", quantization="int4") == 1
    assert "中文-chat" in generate_latest(registry).decode()


def test_a_loading_worker_reports_only_its_state() -> None:
    registry = _metrics(None, WorkerState.LOADING).registry
    assert registry.get_sample_value("tokenyard_worker_state", {"model": "中文-chat", "state": "loading"}) == 1
    assert registry.get_sample_value("tokenyard_num_requests_running", {"model": "中文-chat"}) is None


def test_step_listener_fills_the_step_histogram() -> None:
    metrics, engine = _metrics(STATS), SteppingEngine()
    metrics.watch_engine(engine)
    for listener in engine.listeners:
        listener(0.004, 8, 8)
        listener(0.2, 8, 8)
    labels = {"model": "中文-chat"}
    registry = metrics.registry
    assert registry.get_sample_value("tokenyard_engine_step_duration_seconds_count", labels) == 2
    assert registry.get_sample_value("tokenyard_engine_step_duration_seconds_bucket", {**labels, "le": "0.005"}) == 1


def test_an_engine_without_step_reports_is_left_alone() -> None:
    _metrics(STATS).watch_engine(object())  # no error: nothing to listen to
