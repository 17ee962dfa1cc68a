"""The controller's metrics: workers by model and state, missed heartbeats, evictions, dispatch.

Registry figures are read when Prometheus scrapes (the registry keeps plain counters); dispatch
decisions are counted as they are made, by policy and outcome (`dispatched` or the error code).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tokenyard.controller.registry import WorkerRegistry
from tokenyard.protocol.internal import WorkerState


class RegistryCollector(Collector):
    def __init__(self, registry: WorkerRegistry) -> None:
        self._registry = registry

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily(
            "tokenyard_controller_workers",
            "Registered workers by model alias and state (a worker with two aliases counts under both).",
            labels=["model", "state"],
        )
        tally: Tally[tuple[str, str]] = Tally()
        for info in self._registry.workers():
            for model in info.models:
                tally[(model, info.state.value)] += 1
        for model in sorted({model for model, _ in tally}):
            for state in WorkerState:  # every state, zeros included, so `== 0` alerts have a series
                workers.add_metric([model, state.value], tally[(model, state.value)])
        yield workers
        missed = CounterMetricFamily(
            "tokenyard_controller_heartbeats_missed", "Heartbeats that came later than their interval."
        )
        missed.add_metric([], self._registry.num_missed_heartbeats)
        yield missed
        evictions = CounterMetricFamily(
            "tokenyard_controller_evictions",
            "Workers evicted, by reason (missed_heartbeats, failed_probe).",
            labels=["reason"],
        )
        for reason, count in sorted(self._registry.num_evictions.items()):
            evictions.add_metric([reason], count)
        yield evictions


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry, workers: WorkerRegistry) -> None:
        self.registry = registry
        registry.register(RegistryCollector(workers))
        self.dispatch = Counter(
            "tokenyard_controller_dispatch",
            "Dispatch decisions, by policy and outcome (dispatched, or the error code).",
            ["policy", "outcome"],
            registry=registry,
        )
