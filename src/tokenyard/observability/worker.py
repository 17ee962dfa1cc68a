"""A worker's metrics: the engine's queue, batch, KV cache, prefix cache, tokens and steps, and the
latency of the generations it streams; names mirror vLLM's (`vllm:X` is `tokenyard_X`).

Gauges and the engine's own counters are read from `EngineStats` when Prometheus scrapes (one
snapshot under the engine's lock), so the engine keeps plain integers and pays nothing per token.
Histograms are observed as things happen: step times by the engine thread (a step listener), request
latencies by the worker's stream. Every series carries `model` (the worker's first alias); which
worker it is comes from Prometheus's `instance` label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from tokenyard.engine.base import EngineStats, StepObservable
from tokenyard.observability.latency import LatencyHistograms, StreamTimer
from tokenyard.protocol.internal import WorkerState

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# EngineStats.extra keys (engine.engine) -> counter name without `_total`, and what it counts.
_ENGINE_COUNTERS = {
    "preemptions": ("tokenyard_num_preemptions", "Requests preempted (KV blocks taken back, recomputed later)."),
    "tokens_generated": ("tokenyard_generation_tokens", "Tokens generated."),
}


class WorkerSnapshot:
    """What the collector needs from the worker at scrape time (kept narrow for tests)."""

    def __init__(
        self,
        stats: Callable[[], EngineStats | None],
        state: Callable[[], WorkerState],
        *,
        device: Callable[[], str],
        quantization: Callable[[], str],
        queue_capacity: int,
    ) -> None:
        self.stats, self.state = stats, state
        self.device, self.quantization, self.queue_capacity = device, quantization, queue_capacity


class WorkerCollector(Collector):
    """Scrape-time series from one snapshot of the engine's stats."""

    def __init__(self, model: str, snapshot: WorkerSnapshot) -> None:
        self._model = model
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are only known per scrape; auto_describe must not call collect early

    def collect(self) -> Iterator[Metric]:
        labels = [self._model]
        yield _gauge(
            "tokenyard_worker_state",
            "1 for the worker's current state.",
            {"model": self._model, "state": self._snapshot.state().value},
        )
        stats = self._snapshot.stats()
        if stats is None:  # still loading: no engine yet
            return
        yield _one("tokenyard_num_requests_running", "Requests in the running batch.", labels, stats.num_running)
        yield _one("tokenyard_num_requests_waiting", "Requests queued for the batch.", labels, stats.num_waiting)
        yield _one(
            "tokenyard_worker_queue_capacity",
            "Waiting requests the worker holds before it refuses more with 429.",
            labels,
            self._snapshot.queue_capacity,
        )
        info = InfoMetricFamily("tokenyard_engine", "How the engine runs its steps.", labels=["model"])
        info.add_metric(
            labels,
            {
                "kernel_path": stats.kernel_path or "none",
                "device": self._snapshot.device(),
                "quantization": self._snapshot.quantization(),
            },
        )
        yield info
        yield from _kv_and_tokens(labels, stats.extra)


def _kv_and_tokens(labels: list[str], extra: dict[str, float]) -> Iterator[Metric]:
    total = extra.get("kv_blocks_total")
    if total:
        used = 1.0 - extra.get("kv_blocks_free", total) / total
        yield _one("tokenyard_kv_cache_usage_perc", "KV-cache usage, 0 to 1 (as vLLM's).", labels, used)
    if "prompt_tokens_computed" in extra:
        cached = extra.get("prompt_tokens_cached", 0.0)
        queried = extra["prompt_tokens_computed"] + cached
        yield _counter("tokenyard_prompt_tokens", "Prompt tokens processed (computed or cached).", labels, queried)
        yield _counter(
            "tokenyard_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", labels, queried
        )
        yield _counter("tokenyard_prefix_cache_hits", "Prompt tokens found in the prefix cache.", labels, cached)
    for key, (name, documentation) in _ENGINE_COUNTERS.items():
        if key in extra:
            yield _counter(name, documentation, labels, extra[key])


def _one(name: str, documentation: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["model"])
    family.add_metric(labels, value)
    return family


def _gauge(name: str, documentation: str, labels: dict[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), 1.0)
    return family


def _counter(name: str, documentation: str, labels: list[str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["model"])
    family.add_metric(labels, value)
    return family


class WorkerMetrics:
    """The worker's registry plus the histograms it observes while serving."""

    def __init__(self, registry: CollectorRegistry, model: str, snapshot: WorkerSnapshot) -> None:
        self.registry = registry
        self.model = model
        registry.register(WorkerCollector(model, snapshot))
        self.latency = LatencyHistograms.create(registry, "tokenyard_", ["model"], "worker")
        self.step_seconds = Histogram(
            "tokenyard_engine_step_duration_seconds",
            "Seconds one engine step (schedule, forward, sample, update) took.",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.success = Counter(
            "tokenyard_request_success",
            "Generations that finished, by why they stopped (stop, length, abort, error).",
            ["model", "finished_reason"],
            registry=registry,
        )

    def watch_engine(self, engine: object) -> None:
        """Listen to the engine's steps, when it reports them."""
        if isinstance(engine, StepObservable):
            step = self.step_seconds.labels(self.model)
            engine.add_step_listener(lambda seconds, _sequences, _tokens: step.observe(seconds))

    def timer(self) -> StreamTimer:
        return StreamTimer(self.latency, (self.model,))

    def finished(self, timer: StreamTimer, reason: str) -> float:
        """Record a generation's end; returns its duration in seconds."""
        self.success.labels(self.model, reason).inc()
        return timer.finish()
