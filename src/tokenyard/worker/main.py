"""`tokenyard worker`: load the model, then serve it until SIGTERM, draining first."""

from __future__ import annotations

import logging
import time

from tokenyard.config import Settings
from tokenyard.engine.loader import describe_engine, load_engine
from tokenyard.engine.models import resolve_model
from tokenyard.web import serve_app
from tokenyard.worker.app import WorkerRuntime, create_app

logger = logging.getLogger(__name__)


def build_runtime(settings: Settings) -> WorkerRuntime:
    """Resolve and load the configured model; raises ModelLoadError with a one-line reason."""
    config = settings.worker
    started = time.monotonic()
    resolved = resolve_model(config.model, settings.home_dir())
    engine = load_engine(resolved, config)
    summary = describe_engine(resolved, config)
    names = config.model_names or [resolved.name]
    logger.info(
        "loaded %s (%s: %s) from %s in %.1f s",
        names[0],
        resolved.kind.value,
        summary,
        resolved.path,
        time.monotonic() - started,
    )
    return WorkerRuntime(config=config, engine=engine, kind=resolved.kind, model_names=names, engine_summary=summary)


def run_worker(settings: Settings) -> None:
    runtime = build_runtime(settings)
    app = create_app(runtime, settings.cluster.secret())
    serve_app(
        app,
        settings.worker.host,
        settings.worker.port,
        on_exit_signal=runtime.start_draining,
        graceful_timeout=settings.worker.drain_timeout,
    )
