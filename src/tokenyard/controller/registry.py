"""The controller's soft-state registry of workers, kept alive by heartbeats.

Register and heartbeat are one operation (`upsert`): each report carries the worker's whole status,
so a restarted controller rebuilds everything from the next round of heartbeats, and a worker that
was evicted (say, after a network partition) re-registers just by reporting again. A worker silent
for more than `expiry_intervals` of its own heartbeat interval is marked evicted by `sweep`, and
forgotten `forget_after` seconds later. The registry only bookkeeps: no I/O, and time comes from an
injected clock so expiry is testable without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tokenyard.protocol.internal import (
    DispatchResponse,
    ModelInfo,
    ModelKind,
    Route,
    RouteTable,
    WorkerInfo,
    WorkerState,
    WorkerStatus,
)

logger = logging.getLogger(__name__)


@dataclass
class WorkerEntry:
    """One worker: its last report, when it came, and what the controller has sent it since."""

    status: WorkerStatus
    last_report: float
    # Requests dispatched since the last report; the next report already counts them in its queue.
    dispatched_since_report: int = 0
    evicted_at: float | None = None
    eviction_reason: str = ""

    @property
    def worker_id(self) -> str:
        return self.status.worker_id

    @property
    def speed(self) -> float:
        return self.status.speed

    @property
    def state(self) -> WorkerState:
        return WorkerState.EVICTED if self.evicted_at is not None else self.status.state

    @property
    def kind(self) -> ModelKind:
        # WorkerStatus guarantees a kind in every state but loading, and only healthy workers are routed to.
        if self.status.kind is None:
            raise ValueError(f"worker {self.worker_id} is {self.state.value} and has no model kind yet")
        return self.status.kind

    @property
    def reason(self) -> str:
        return self.eviction_reason if self.evicted_at is not None else self.status.reason

    def load(self) -> float:
        """Expected wait relative to this worker's speed: its reported queue plus what we sent since."""
        return (self.status.queue_length + self.dispatched_since_report) / self.status.speed

    def serves(self, tenant: str | None) -> bool:
        """Whether a request of `tenant` may go to this worker (a shared one, or the tenant's own)."""
        return not self.status.tenants or tenant in self.status.tenants

    def route(self) -> DispatchResponse:
        return DispatchResponse(
            worker_id=self.worker_id,
            address=self.status.address,
            kind=self.kind,
            context_length=self.status.context_length,
            tenants=self.status.tenants,
        )

    def info(self, now: float) -> WorkerInfo:
        fields = self.status.model_dump()
        fields.update(state=self.state, reason=self.reason)
        return WorkerInfo(**fields, last_heartbeat_age=round(now - self.last_report, 3))


class WorkerRegistry:
    """Workers by id, with expiry by missed heartbeats. Not thread-safe: used from one event loop."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        expiry_intervals: float = 3.0,
        forget_after: float = 300.0,
    ) -> None:
        if expiry_intervals <= 0 or forget_after < 0:
            raise ValueError(
                f"expiry_intervals must be > 0 and forget_after >= 0, got {expiry_intervals} and {forget_after}"
            )
        self._clock = clock
        self._expiry_intervals = expiry_intervals
        self._forget_after = forget_after
        self._entries: dict[str, WorkerEntry] = {}
        # When each alias was last served by a registered worker: a model whose only worker just
        # unregistered (say, restarting) answers 503 "no healthy worker", not 404 "does not exist".
        self._model_seen: dict[str, float] = {}
        # Counters for the controller's metrics (observability.controller reads them when scraped).
        self.num_evictions: dict[str, int] = {"missed_heartbeats": 0, "failed_probe": 0}
        self.num_missed_heartbeats = 0

    # --- changes -------------------------------------------------------------------------------

    def upsert(self, status: WorkerStatus) -> WorkerEntry:
        """Register or heartbeat: the report replaces what we knew and resets the dispatch count."""
        now = self._clock()
        previous = self._entries.get(status.worker_id)
        if previous is not None:
            # Beats that should have come between the last report and this one.
            late = (now - previous.last_report) / previous.status.heartbeat_interval
            self.num_missed_heartbeats += max(0, int(late + 0.5) - 1)
        entry = WorkerEntry(status=status, last_report=now)
        self._entries[status.worker_id] = entry
        for model in status.models:
            self._model_seen[model] = now
        _log_report(previous, status)
        return entry

    def remove(self, worker_id: str) -> bool:
        """Unregister; False when the worker was not registered."""
        entry = self._entries.pop(worker_id, None)
        if entry is None:
            return False
        now = self._clock()
        for model in entry.status.models:
            self._model_seen[model] = now
        logger.info(
            "worker %s at %s unregistered (served %s)",
            worker_id,
            entry.status.address,
            ", ".join(entry.status.models),
        )
        return True

    def sweep(self) -> list[str]:
        """Evict workers silent too long and forget long-evicted ones; returns the ids evicted now."""
        now = self._clock()
        evicted = [entry for entry in self._entries.values() if self._is_expired(entry, now)]
        for entry in evicted:
            silence = now - entry.last_report
            entry.evicted_at = now
            entry.eviction_reason = f"no heartbeat for {silence:.1f} s"
            self.num_evictions["missed_heartbeats"] += 1
            logger.info(
                "worker %s at %s evicted (%s), served %s",
                entry.worker_id,
                entry.status.address,
                entry.eviction_reason,
                ", ".join(entry.status.models),
            )
        self._forget(now)
        return [entry.worker_id for entry in evicted]

    def evict(self, worker_id: str, reason: str) -> bool:
        """Evict one worker now (a failed probe); False if unknown or already evicted."""
        entry = self._entries.get(worker_id)
        if entry is None or entry.evicted_at is not None:
            return False
        entry.evicted_at = self._clock()
        entry.eviction_reason = reason
        self.num_evictions["failed_probe"] += 1
        logger.info("worker %s at %s evicted (%s)", worker_id, entry.status.address, reason)
        return True

    def _is_expired(self, entry: WorkerEntry, now: float) -> bool:
        limit = self._expiry_intervals * entry.status.heartbeat_interval
        return entry.evicted_at is None and now - entry.last_report > limit

    def _forget(self, now: float) -> None:
        for worker_id, entry in list(self._entries.items()):
            if entry.evicted_at is not None and now - entry.evicted_at > self._forget_after:
                del self._entries[worker_id]
                logger.info("worker %s forgotten after %.0f s evicted", worker_id, now - entry.evicted_at)
        served = {model for entry in self._entries.values() for model in entry.status.models}
        for model, seen in list(self._model_seen.items()):
            if model not in served and now - seen > self._forget_after:
                del self._model_seen[model]

    # --- queries -------------------------------------------------------------------------------

    def get(self, worker_id: str) -> WorkerEntry | None:
        return self._entries.get(worker_id)

    def candidates(self, model: str) -> list[WorkerEntry]:
        """Healthy workers serving `model`, ordered by id so that policies are deterministic."""
        return [
            entry
            for entry in self._sorted_entries()
            if entry.state is WorkerState.HEALTHY and model in entry.status.models
        ]

    def serving(self, model: str) -> list[WorkerEntry]:
        """Every registered worker serving `model`, whatever its state (for error messages)."""
        return [entry for entry in self._sorted_entries() if model in entry.status.models]

    def knows_model(self, model: str) -> bool:
        """Whether some worker serves `model`, or did within the last `forget_after` seconds."""
        # Every registered worker's aliases stay in _model_seen until the worker is forgotten.
        return model in self._model_seen

    def workers(self) -> list[WorkerInfo]:
        """All workers, draining, unhealthy and evicted included, for `tokenyard status`."""
        now = self._clock()
        return [entry.info(now) for entry in self._sorted_entries()]

    def models(self) -> list[ModelInfo]:
        """Models with at least one healthy worker, by name."""
        return [
            ModelInfo(
                name=model,
                kind=entries[0].kind,
                # The smallest context is the one every worker of this alias can honour.
                context_length=min(entry.status.context_length for entry in entries),
                num_workers=len(entries),
                tenants=_tenants_reaching(entries),
            )
            for model, entries in self._healthy_by_model().items()
        ]

    def loading_models(self) -> list[str]:
        """Models that no healthy worker serves yet but a loading one will."""
        healthy = self._healthy_by_model()
        loading = {
            model
            for entry in self._entries.values()
            if entry.state is WorkerState.LOADING
            for model in entry.status.models
            if model not in healthy
        }
        return sorted(loading)

    def routes(self) -> RouteTable:
        """Each model's healthy workers, for the gateway to cache while the controller is away."""
        return RouteTable(
            routes=[
                Route(model=model, workers=[entry.route() for entry in entries])
                for model, entries in self._healthy_by_model().items()
            ]
        )

    def _healthy_by_model(self) -> dict[str, list[WorkerEntry]]:
        by_model: dict[str, list[WorkerEntry]] = {}
        for entry in self._sorted_entries():
            if entry.state is WorkerState.HEALTHY:
                for model in entry.status.models:
                    by_model.setdefault(model, []).append(entry)
        return dict(sorted(by_model.items()))

    def _sorted_entries(self) -> list[WorkerEntry]:
        return sorted(self._entries.values(), key=lambda entry: entry.worker_id)


def _tenants_reaching(entries: list[WorkerEntry]) -> list[str] | None:
    """Who can reach a model: None (everyone) if a shared worker serves it, else its workers' tenants."""
    if any(not entry.status.tenants for entry in entries):
        return None
    return sorted({tenant for entry in entries for tenant in entry.status.tenants})


def _log_report(previous: WorkerEntry | None, status: WorkerStatus) -> None:
    """Log (re-)registrations and state changes; routine heartbeats stay quiet."""
    if previous is None or previous.evicted_at is not None:
        logger.info(
            "worker %s %s at %s serving %s (%s)",
            status.worker_id,
            "registered" if previous is None else "re-registered",
            status.address,
            ", ".join(status.models),
            status.state.value,
        )
    elif previous.status.state != status.state:
        reason = f": {status.reason}" if status.reason else ""
        logger.info("worker %s at %s is now %s%s", status.worker_id, status.address, status.state.value, reason)
