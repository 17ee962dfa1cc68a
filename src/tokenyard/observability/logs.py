"""Log lines for people and for machines: readable on a terminal, one JSON object per line otherwise.

Every line carries the service's name and, inside a request, the request's id, tenant, model and
worker, taken from the request's state (`LogContext`) rather than passed to each call. The id is
the gateway's X-Request-ID, forwarded on the gateway's calls to the controller and workers (the
shared HTTP client adds the header), so one search finds a request's lines in every service.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.observability.settings import LoggingConfig
from tokenyard.protocol.outcome import RequestOutcome

REQUEST_ID_HEADER = "x-request-id"
# The state dict of the request being handled by this task (Starlette's `scope["state"]`).
_request_state: ContextVar[dict[str, Any] | None] = ContextVar("tokenyard_request_state", default=None)
# Fields a log call may pass in `extra=` that the JSON line keeps.
EXTRA_FIELDS = ("request_id", "tenant", "model", "worker", "status", "latency_ms", "endpoint")
NOISY_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


def request_fields() -> dict[str, Any]:
    """The current request's id, tenant, model and worker, as far as they are known yet."""
    state = _request_state.get()
    if not state:
        return {}
    fields: dict[str, Any] = {"request_id": state.get("request_id")}
    principal = state.get("principal")
    fields["tenant"] = getattr(principal, "tenant", None)
    tracker = state.get("outcome")
    fields["model"] = getattr(tracker, "model", None)
    fields["worker"] = getattr(tracker, "worker", None)
    return {key: value for key, value in fields.items() if value}


class LogContextMiddleware:
    """Makes the request's state visible to log lines written while it is handled (after the
    request-id middleware, which puts the id on the state)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _request_state.set(scope.setdefault("state", {}))
        try:
            await self.app(scope, receive, send)
        finally:
            _request_state.reset(token)


async def forward_request_id(request: httpx.Request) -> None:
    """httpx request hook: internal calls made for a request carry its id."""
    request_id = request_fields().get("request_id")
    if request_id and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = request_id


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(request_fields())
        line.update({key: getattr(record, key) for key in EXTRA_FIELDS if getattr(record, key, None) is not None})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`15:04:05 gateway INFO name: message [request_id=... tenant=...]`"""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = request_fields()
        fields.update({key: getattr(record, key) for key in EXTRA_FIELDS if getattr(record, key, None) is not None})
        return text + (" [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" if fields else "")


def setup_logging(service: str, config: LoggingConfig | None = None, stream: IO[str] | None = None) -> None:
    """Configure the root logger once per process (a command's first act after its settings)."""
    config = config or LoggingConfig()
    stream = stream or sys.stderr
    use_json = config.format == "json" or (config.format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service) if use_json else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


_access = logging.getLogger("tokenyard.access")


def log_outcome(outcome: RequestOutcome) -> None:
    """One line per finished gateway request (an outcome listener): what, for whom, how it ended."""
    latency_ms = round(outcome.latency_s * 1000, 1)
    level = logging.WARNING if outcome.status >= 500 else logging.INFO
    _access.log(
        level,
        "%s %s %d in %.0f ms",
        outcome.method,
        outcome.endpoint,
        outcome.status,
        latency_ms,
        extra={
            "request_id": outcome.request_id,
            "tenant": outcome.tenant,
            "model": outcome.model,
            "worker": outcome.worker,
            "status": outcome.status,
            "latency_ms": latency_ms,
            "endpoint": outcome.endpoint,
        },
    )
