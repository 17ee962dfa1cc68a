"""`tokenyard serve`: the whole stack on one host as supervised child processes.

The children run the same commands as a multi-host deployment (controller, workers, gateway), so
the laptop path and the cluster path are one code path. The supervisor waits until every worker
is registered, restarts a child that dies, and on Ctrl-C/SIGTERM stops the gateway first, then the
workers (which drain), then the controller, killing anything that outlives its grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenyard.config import Settings
from tokenyard.governance.content_filter import WordFilter
from tokenyard.protocol.internal import WorkerInfo, WorkerList, WorkerState
from tokenyard.store import Store
from tokenyard.web import cluster_headers

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT = 900.0  # seconds: a first start converts the default model
PROGRESS_EVERY = 5.0  # seconds between start-up progress lines
# Settings of the chat model that must not reach the embedding worker through the environment (an
# int4 quantization or a 4096-token context would make it refuse to start).
CHAT_ONLY_ENV = tuple(
    f"TOKENYARD_WORKER__{key}"
    for key in (
        "MODEL",
        "MODEL_NAMES",
        "PORT",
        "ADVERTISE_ADDRESS",
        "DEVICE",
        "DTYPE",
        "QUANTIZATION",
        "MAX_BATCH_SIZE",
        "CONTEXT_LENGTH",
        "KV_CACHE_MEMORY",
        "GPU_MEMORY_UTILIZATION",
        "ENFORCE_EAGER",
    )
)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies, so nothing is orphaned."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    grace: float
    env_overrides: dict[str, str] = field(default_factory=dict)
    env_removed: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = field(default=0.0)

    def start(self) -> None:
        logger.info("starting %s", self.name)
        env = {k: v for k, v in os.environ.items() if k not in self.env_removed} | self.env_overrides
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in time; killing it", self.name)
            self.process.kill()
            self.process.wait()


class _Stop(Exception):
    """Raised from the signal handler to leave the supervision loop."""


def _flags(values: dict[str, Any]) -> list[str]:
    """`{"max_batch_size": 8}` -> `["--max-batch-size", "8"]`."""
    return [part for key, value in values.items() for part in (f"--{key.replace('_', '-')}", str(value))]


def build_children(
    settings: Settings, config_file: str | None, chat_flags: dict[str, Any] | None = None
) -> list[Child]:
    """The processes `serve` runs; `chat_flags` (serve's --quantization, --dtype...) go to the chat
    worker only, and the embedding worker neither sees them nor the chat-only environment."""
    base = [sys.executable, "-m", "tokenyard"]
    conf = ["--config", config_file] if config_file else []
    controller_url = f"http://{settings.controller.host}:{settings.controller.port}"
    worker = settings.worker
    drain = worker.drain_timeout + 5
    children = [
        Child("controller", [*base, "controller", *conf], grace=5),
        Child(
            "chat worker",
            [
                *base,
                "worker",
                *conf,
                "--model",
                worker.model,
                "--controller",
                controller_url,
                *_flags(chat_flags or {}),
            ],
            grace=drain,
        ),
    ]
    if settings.serve.embedding_model and settings.serve.embedding_model.lower() != "none":
        children.append(
            Child(
                "embedding worker",
                [
                    *base,
                    "worker",
                    *conf,
                    "--model",
                    settings.serve.embedding_model,
                    "--port",
                    str(settings.serve.embedding_port),
                    "--controller",
                    controller_url,
                    # A config file's worker section describes the chat worker; these undo its model settings.
                    "--quantization",
                    "none",
                    "--dtype",
                    "auto",
                ],
                grace=drain,
                env_removed=CHAT_ONLY_ENV,
            )
        )
    children.append(
        Child(
            "gateway",
            [
                *base,
                "gateway",
                *conf,
                "--host",
                settings.gateway.host,
                "--port",
                str(settings.gateway.port),
                "--controller",
                controller_url,
            ],
            grace=10,
        )
    )
    return children


def _workers(settings: Settings, client: httpx.Client) -> list[WorkerInfo] | None:
    url = f"http://{settings.controller.host}:{settings.controller.port}/workers"
    try:
        return WorkerList.model_validate_json(client.get(url, timeout=2).content).workers
    except (httpx.HTTPError, ValueError):
        return None


def _progress(workers: list[WorkerInfo]) -> str:
    """One line: what each worker that is not ready yet is doing."""
    waiting = [
        f"{', '.join(w.models)}: {w.reason or w.state.value}" for w in workers if w.state is not WorkerState.HEALTHY
    ]
    return "starting: " + ("; ".join(waiting) if waiting else "waiting for the workers to register")


def _wait_ready(settings: Settings, children: list[Child]) -> bool:
    """Block until every worker is registered and healthy; False if a child died on the way."""
    num_workers = sum(1 for c in children if "worker" in c.name)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    next_progress = time.monotonic() + PROGRESS_EVERY
    with httpx.Client(headers=cluster_headers(settings.cluster.secret())) as client:
        while time.monotonic() < deadline:
            dead = [c for c in children if not c.alive()]
            if dead:
                logger.error(
                    "%s exited during start-up (code %s); stopping",
                    dead[0].name,
                    dead[0].process.returncode if dead[0].process else None,
                )
                return False
            workers = _workers(settings, client)
            # How each model runs, for the ready line: "smollm2-135m-instruct (int4 on cpu, max batch 64)".
            models = [
                f"{m} ({w.engine})" if w.engine else m
                for w in workers or []
                if w.state is WorkerState.HEALTHY
                for m in w.models
            ]
            if workers is not None and time.monotonic() >= next_progress:
                print(_progress(workers), flush=True)
                next_progress = time.monotonic() + PROGRESS_EVERY
            if workers is not None and len(models) >= num_workers:
                gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
                try:
                    if client.get(f"{gateway}/health", timeout=2).status_code == 200:
                        print(
                            f"tokenyard is serving {', '.join(models)} on {gateway}/v1 (Ctrl-C stops it)",
                            flush=True,
                        )
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
    logger.error("start-up took longer than %.0f s; stopping", STARTUP_TIMEOUT)
    return False


def _supervise(children: list[Child], backoff: float) -> None:
    """Restart any child that dies, with exponential backoff, until a signal arrives."""
    while True:
        now = time.monotonic()
        for child in children:
            if child.alive() or child.process is None:
                continue
            if child.next_start == 0.0:
                delay = min(backoff * 2**child.restarts, 30.0)
                logger.warning(
                    "%s exited with code %s; restarting in %.0f s",
                    child.name,
                    child.process.returncode,
                    delay,
                )
                child.next_start = now + delay
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()
        time.sleep(0.5)


def _shutdown(children: list[Child]) -> None:
    """Gateway first, then workers (they drain), then the controller."""
    order = [c for c in children if c.name == "gateway"]
    order += [c for c in children if "worker" in c.name]
    order += [c for c in children if c.name == "controller"]
    for group in (order[:1], order[1:-1], order[-1:]):
        for child in group:
            child.stop()
        for child in group:
            child.wait_or_kill(time.monotonic() + child.grace)


def migrate_sqlite(settings: Settings) -> None:
    """On SQLite (one host, the default) serve keeps the store's schema current itself; a server
    database is upgraded by its operator with `tokenyard db upgrade` (the gateway says so)."""
    store = Store(settings.database_url(), settings.database.pool_size)
    try:
        if store.kind == "sqlite":
            store.upgrade()
    finally:
        store.close()


def run_serve(settings: Settings, config_file: str | None, chat_flags: dict[str, Any] | None = None) -> int:
    WordFilter.from_config(settings.filter)  # a bad word list is a ConfigError now, not a gateway restart loop
    migrate_sqlite(settings)
    children = build_children(settings, config_file, chat_flags)

    def kill_all(_signum: int, _frame: object) -> None:
        for child in children:
            if child.alive() and child.process is not None:
                child.process.kill()

    def on_signal(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, kill_all)  # a second Ctrl-C while stopping kills at once
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        for child in children:
            child.start()
        if not _wait_ready(settings, children):
            code = 1
        else:
            _supervise(children, settings.serve.restart_backoff)
    except _Stop as stop:
        logger.info("%s received; stopping", stop)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shutdown(children)
        logger.info("all processes stopped")
    return code
