"""`tokenyard worker`: register at once as `loading`, load the model, then serve it until SIGTERM,
draining first. A model that cannot load stops the process with one line and exit code 1."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tokenyard.config import Settings
from tokenyard.engine.base import EmbeddingEngine, GenerationEngine
from tokenyard.engine.loader import describe_engine, load_engine, pick_device, resolve_settings
from tokenyard.errors import ModelLoadError
from tokenyard.models import resolve_model, served_name
from tokenyard.protocol.internal import ModelKind
from tokenyard.web import GracefulServer, server_config
from tokenyard.worker.app import create_app
from tokenyard.worker.revision import model_revision
from tokenyard.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


def model_loader(
    settings: Settings, runtime: WorkerRuntime
) -> Callable[[Callable[[str], None]], tuple[GenerationEngine | EmbeddingEngine, ModelKind]]:
    """Resolve and load the configured model, reporting each phase; raises ModelLoadError."""
    config = settings.worker

    def load(progress: Callable[[str], None]) -> tuple[GenerationEngine | EmbeddingEngine, ModelKind]:
        started = time.monotonic()
        progress(f"preparing {config.model} (a GGUF model is converted on its first start)")
        resolved = resolve_model(config.model, settings.home_dir())
        runtime.kind = resolved.kind
        runtime.device = pick_device(config.device).type
        progress(f"loading {runtime.model_names[0]} onto {runtime.device}")
        engine = load_engine(resolved, config)
        runtime.engine_summary = describe_engine(resolved, config)
        precision = runtime.engine_summary.split(",")[0]  # "int4 on cpu": what changes the numbers, not the batch
        runtime.model_revision = f"{model_revision(resolved.path)} ({precision})"
        runtime.quantization = resolve_settings(resolved, config).quantization
        logger.info(
            "loaded %s (%s: %s) from %s in %.1f s",
            runtime.model_names[0],
            resolved.kind.value,
            runtime.engine_summary,
            resolved.path,
            time.monotonic() - started,
        )
        return engine, resolved.kind

    return load


def run_worker(settings: Settings) -> None:
    config = settings.worker
    names = config.model_names or [served_name(config.model)]
    runtime = WorkerRuntime(config=config, engine=None, kind=None, model_names=names)
    failure: list[ModelLoadError] = []
    server: GracefulServer | None = None

    def on_load_failed(error: ModelLoadError) -> None:
        failure.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(
        runtime,
        settings.cluster.secret(),
        loader=model_loader(settings, runtime),
        on_load_failed=on_load_failed,
        metrics=settings.metrics,
        admin_key=settings.admin_secret(),
    )
    server = GracefulServer(server_config(app, config.host, config.port, config.drain_timeout), runtime.start_draining)
    server.run()
    if failure:
        raise failure[0]
