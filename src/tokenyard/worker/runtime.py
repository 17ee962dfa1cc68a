"""What one worker process holds: its engine (once loaded), identity, load progress and drain state.

A worker registers before its model is ready: while it converts or loads, it reports `loading`
with what it is doing, so the controller answers 503 `model_loading` for its models (never 404) and
`tokenyard serve` can show progress. The engine appears when loading ends.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import EmbeddingEngine, EngineStats, GenerationEngine
from tokenyard.errors import InvalidRequestError, ModelLoadingError, ModelNotFoundError, NoHealthyWorkerError
from tokenyard.observability.worker import WorkerMetrics
from tokenyard.protocol.internal import ModelKind, WorkerState, WorkerStatus
from tokenyard.worker.heartbeat import Heartbeat

logger = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    config: WorkerConfig
    engine: GenerationEngine | EmbeddingEngine | None
    kind: ModelKind | None
    model_names: list[str]
    worker_id: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")
    draining: bool = False
    in_flight: int = 0
    heartbeat: Heartbeat | None = None
    metrics: WorkerMetrics | None = None
    device: str = "unknown"  # cpu or cuda once loaded, for the metrics' engine info
    quantization: str = "none"  # as resolved when loaded (`auto` becomes what the engine chose)
    engine_summary: str = ""  # how the model runs (loader.describe_engine), shown by `tokenyard serve`
    model_revision: str | None = None  # the weights and precision (worker.revision), in conversation logs
    loading: str = "starting"  # what loading is doing now, while `engine` is None
    loading_since: float = field(default_factory=time.monotonic)

    def stats(self) -> EngineStats | None:
        return self.engine.stats() if self.engine is not None else None

    def status(self) -> WorkerStatus:
        stats = self.stats()
        if self.engine is None or stats is None:
            return self._loading_status()
        queue = max(stats.num_running + stats.num_waiting, self.in_flight)
        state, reason = self._state(stats, queue)
        return WorkerStatus(
            worker_id=self.worker_id,
            address=self.config.address(),
            models=self.model_names,
            kind=self.kind,
            context_length=self.engine.context_length,
            state=state,
            reason=reason,
            queue_length=queue,
            num_running=stats.num_running,
            num_waiting=stats.num_waiting,
            speed=max(stats.tokens_per_second, 1.0),
            heartbeat_interval=self.config.heartbeat_interval,
            engine=self.engine_summary,
            tenants=self.config.tenants,
        )

    def _loading_status(self) -> WorkerStatus:
        # Stays `loading` even when told to stop: it never served, so there is nothing to drain.
        return WorkerStatus(
            worker_id=self.worker_id,
            address=self.config.address(),
            models=self.model_names,
            kind=self.kind,
            state=WorkerState.LOADING,
            reason="shutting down while loading" if self.draining else self.loading_reason(),
            heartbeat_interval=self.config.heartbeat_interval,
            tenants=self.config.tenants,
        )

    def loading_reason(self) -> str:
        return f"{self.loading} ({time.monotonic() - self.loading_since:.0f} s)"

    def _state(self, stats: EngineStats, queue: int) -> tuple[WorkerState, str]:
        """Healthy means "can generate", not only "the process answers"."""
        if self.draining:
            return WorkerState.DRAINING, "shutting down: finishing in-flight requests"
        if queue and stats.seconds_since_progress > self.config.stuck_timeout:
            return (
                WorkerState.UNHEALTHY,
                f"engine made no progress for {stats.seconds_since_progress:.0f} s with {queue} request(s) queued",
            )
        return WorkerState.HEALTHY, ""

    def check_accepting(self, model: str, tenant: str | None = None) -> None:
        # A worker bound to tenants serves no one else, even if a request were misdirected to it.
        if model not in self.model_names or (self.config.tenants and tenant not in self.config.tenants):
            raise ModelNotFoundError(model)
        if self.draining:
            raise NoHealthyWorkerError("This worker is draining and takes no new requests.")
        if self.engine is None:
            raise ModelLoadingError(model, self.loading_reason())

    def generation_engine(self) -> GenerationEngine:
        if self.engine is None:
            raise ModelLoadingError(self.model_names[0], self.loading_reason())
        if self.kind is not ModelKind.GENERATE:
            raise InvalidRequestError("This model only computes embeddings; use /v1/embeddings.", param="model")
        return self.engine  # type: ignore[return-value]

    def embedding_engine(self) -> EmbeddingEngine:
        if self.engine is None:
            raise ModelLoadingError(self.model_names[0], self.loading_reason())
        if self.kind is not ModelKind.EMBED:
            raise InvalidRequestError("This model does not compute embeddings.", param="model")
        return self.engine  # type: ignore[return-value]

    async def start_draining(self) -> None:
        """Stop taking work and tell the controller at once, so no new request is dispatched here."""
        self.draining = True
        logger.info("draining: %d request(s) in flight", self.in_flight)
        if self.heartbeat is not None:
            await self.heartbeat.beat()
