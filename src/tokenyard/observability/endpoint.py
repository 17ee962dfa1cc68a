"""`GET /metrics` on every service: Prometheus text from the app's own registry.

Public by default, like /health, so that Prometheus needs no secret on a private network; with
`metrics.require_auth` it wants the admin key (`TOKENYARD_ADMIN_KEY`) as a bearer token, which
Prometheus sends with `authorization: {credentials_file: ...}` (see deploy/monitoring/).
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest

from tokenyard.errors import ConfigError
from tokenyard.observability.settings import MetricsConfig
from tokenyard.web import openai_error

ADMIN_KEY_ENV = "TOKENYARD_ADMIN_KEY"  # read into Settings.admin_key


def new_registry() -> CollectorRegistry:
    """A registry for one app, with the standard `process_*` series (CPU seconds, resident memory,
    open files) that every Prometheus user already has dashboards for."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def install_metrics_endpoint(
    app: FastAPI, registry: CollectorRegistry, config: MetricsConfig, admin_key: str | None
) -> None:
    """Serve `registry` at GET /metrics; the app keeps it on `app.state.metrics_registry`."""
    key = admin_key if config.require_auth else None
    if config.require_auth and key is None:
        raise ConfigError(f"metrics.require_auth is true but {ADMIN_KEY_ENV} is not set")
    app.state.metrics_registry = registry

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if key is not None and not _bearer_matches(request, key):
            return _unauthorized()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: Request, key: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), key.encode())


def _unauthorized() -> JSONResponse:
    response = openai_error(401, "GET /metrics requires the admin key as a bearer token.", code="invalid_api_key")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response
