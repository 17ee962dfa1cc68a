"""Every route of every app is public by design or authenticated: a walk over all of them.

Each app's routes are enumerated from the app itself (included routers and mounts too) and every
method of every route is called without credentials, from a non-loopback address. A route must
answer the way its declaration below says: public ones are served, the others refused (401 for a
missing tenant or admin key, 403 for a missing cluster token). A route that is in neither list
fails the test: whoever adds a route decides here, explicitly, whether it is public.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount, Route

from tests.worker.test_app import EchoEngine
from tokenyard.config import ControllerConfig, GatewayConfig, Settings, WorkerConfig
from tokenyard.controller.app import create_app as controller_app
from tokenyard.gateway.app import create_app as gateway_app
from tokenyard.governance.config import AuthConfig
from tokenyard.observability.settings import MetricsConfig
from tokenyard.protocol.internal import ModelKind
from tokenyard.store import Store
from tokenyard.worker.app import WorkerRuntime
from tokenyard.worker.app import create_app as worker_app

TOKEN = "cluster-secret"
OUTSIDER = ("203.0.113.50", 40000)  # not loopback, not on any list
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

ADMIN_KEY = "an-admin-key"
# Public by design: probes, the API description, the web UI's pages and assets (they hold no data: the
# pages call /v1 and /admin with the user's own key), and /metrics unless metrics.require_auth.
PUBLIC = {
    "gateway": {"/health", "/ready", "/", "/dashboard", "/ui", "/metrics", *DOCS},
    "controller": {"/health", "/metrics"},
    "worker": {"/health", "/ready", "/metrics"},
}
# Authenticated: the status a request without credentials must get.
PROTECTED_PREFIXES = {
    "gateway": {"/v1/": 401, "/admin/": 401},
    "controller": {"/": 403},
    "worker": {"/": 403},
}


def walk(routes: Iterable[Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    """(method, path) for every endpoint, through included routers and mounts."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI's lazily included router
            yield from walk(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            yield "GET", prefix + route.path
        elif isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield method, prefix + route.path


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def expected(app_name: str, path: str, metrics_private: bool) -> int | None:
    """None: public; else the status an unauthenticated request gets. Fails for undeclared routes."""
    if path == "/metrics" and metrics_private:
        return 401  # behind the admin key, on every service
    if path in PUBLIC[app_name]:
        return None
    for prefix, status in PROTECTED_PREFIXES[app_name].items():
        if path.startswith(prefix):
            return status
    raise AssertionError(f"{app_name} route {path} is neither declared public nor under a protected prefix")


async def check_app(app_name: str, app: FastAPI, metrics_private: bool) -> list[str]:
    endpoints = sorted(set(walk(app.routes)))
    assert endpoints, f"no routes found in the {app_name} app"
    transport = httpx.ASGITransport(app=app, client=OUTSIDER)
    checked = []
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        for method, path in endpoints:
            status = expected(app_name, path, metrics_private)
            response = await client.request(method, concrete(path), json={} if method != "GET" else None)
            if status is None:
                assert response.status_code not in (401, 403), f"public {method} {path}: {response.status_code}"
            else:
                assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            checked.append(f"{method} {path}")
    return checked


@pytest.fixture(params=[False, True], ids=["metrics-public", "metrics-private"])
def metrics_private(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def gateway(sqlite_url: str, metrics_private: bool) -> AsyncIterator[FastAPI]:
    store = Store(sqlite_url)
    store.upgrade()
    settings = Settings(
        gateway=GatewayConfig(controller="http://127.0.0.1:9"),
        auth=AuthConfig(enabled=True),
        admin_key=ADMIN_KEY,  # type: ignore[arg-type]
        cluster={"token": TOKEN},  # type: ignore[arg-type]
        metrics=MetricsConfig(require_auth=metrics_private),
    )
    app = gateway_app(settings, store=store)
    async with app.router.lifespan_context(app):
        yield app
    store.close()


async def test_every_gateway_route(gateway: FastAPI, metrics_private: bool) -> None:
    checked = await check_app("gateway", gateway, metrics_private)
    assert {"GET /v1/models", "POST /v1/chat/completions", "POST /admin/keys", "DELETE /admin/keys/{prefix}"} <= set(
        checked
    )


async def test_every_controller_route(metrics_private: bool) -> None:
    metrics = MetricsConfig(require_auth=metrics_private)
    app = controller_app(ControllerConfig(), TOKEN, metrics=metrics, admin_key=ADMIN_KEY)
    checked = await check_app("controller", app, metrics_private)
    assert {"POST /register", "POST /dispatch", "GET /workers"} <= set(checked)


async def test_every_worker_route(metrics_private: bool) -> None:
    config = WorkerConfig(controller="http://127.0.0.1:9", heartbeat_interval=60)
    runtime = WorkerRuntime(config=config, engine=EchoEngine(), kind=ModelKind.GENERATE, model_names=["echo"])
    metrics = MetricsConfig(require_auth=metrics_private)
    checked = await check_app(
        "worker", worker_app(runtime, TOKEN, metrics=metrics, admin_key=ADMIN_KEY), metrics_private
    )
    assert {"POST /generate", "POST /embed", "POST /abort"} <= set(checked)


async def test_without_a_cluster_token_the_control_plane_answers_loopback_only() -> None:
    app = controller_app(ControllerConfig(), None)
    for peer, allowed in ((OUTSIDER, False), (("127.0.0.1", 5), True), (("::1", 5), True)):
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as client:
            response = await client.get("/workers")
        assert (response.status_code == 200) is allowed, (peer, response.status_code)
