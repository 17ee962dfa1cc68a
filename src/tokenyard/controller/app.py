"""The controller's HTTP API: registration, heartbeats, dispatch and the cluster view.

Routes are thin: they fetch the registry and the dispatch policy from `app.state` and speak the
typed messages of protocol/internal.py. Reads sweep the registry first, so a worker past its expiry
is never handed out even between two runs of the background sweep; that task (every ~0.5 s) makes
evictions and their log lines timely when nobody is asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import APIRouter, FastAPI, Request

from tokenyard import web
from tokenyard.config import ControllerConfig
from tokenyard.controller.api_hint import GatewaySightingMiddleware, GatewaySightings, OpenAIHintMiddleware
from tokenyard.controller.dispatch import Policy, dispatch, make_policy
from tokenyard.controller.registry import WorkerRegistry
from tokenyard.errors import ErrorCode, ModelLoadingError, ModelNotFoundError, NoHealthyWorkerError, TokenyardError
from tokenyard.gateway.request_id import RequestIdMiddleware
from tokenyard.observability.controller import ControllerMetrics
from tokenyard.observability.endpoint import install_metrics_endpoint, new_registry
from tokenyard.observability.logs import LogContextMiddleware
from tokenyard.observability.settings import MetricsConfig
from tokenyard.protocol.internal import (
    DispatchRequest,
    DispatchResponse,
    FailureReport,
    FailureReportResponse,
    HeartbeatResponse,
    ModelList,
    RouteTable,
    UnregisterRequest,
    WorkerList,
    WorkerStatus,
)

logger = logging.getLogger(__name__)

DEFAULT_SWEEP_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0  # seconds a reported worker has to answer /health before it is evicted

router = APIRouter()


def create_app(
    config: ControllerConfig,
    cluster_token: str | None,
    clock: Callable[[], float] = time.monotonic,
    *,
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
    rng: random.Random | None = None,
    metrics: MetricsConfig | None = None,
    admin_key: str | None = None,
) -> FastAPI:
    """Build the controller app; `clock` and `rng` are injectable so tests drive time and chance."""
    registry = WorkerRegistry(clock=clock, expiry_intervals=config.expiry_intervals)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep_forever(registry, sweep_interval), name="controller-sweep")
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as client:
            app.state.probe_client = client
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="tokenyard controller", lifespan=lifespan)
    app.state.registry = registry
    app.state.clock = clock
    app.state.warm_until = clock() + config.startup_grace
    app.state.policy = make_policy(config.dispatch, rng)
    app.state.policy_name = config.dispatch.value
    registry_metrics = new_registry()
    app.state.metrics = ControllerMetrics(registry_metrics, registry)
    install_metrics_endpoint(app, registry_metrics, metrics or MetricsConfig(), admin_key)
    app.include_router(router)
    web.install_error_handlers(app)
    gateways = GatewaySightings(clock)
    app.add_middleware(GatewaySightingMiddleware, sightings=gateways)  # inside the token check
    app.add_middleware(LogContextMiddleware)
    app.add_middleware(RequestIdMiddleware)  # the gateway's X-Request-ID, for this controller's log lines
    app.add_middleware(web.ClusterAuthMiddleware, token=cluster_token)
    app.add_middleware(OpenAIHintMiddleware, sightings=gateways)  # outermost: public
    return app


async def _sweep_forever(registry: WorkerRegistry, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            registry.sweep()
        except Exception:  # one bad sweep must not stop eviction for the controller's lifetime
            logger.exception("registry sweep failed")


def _registry(request: Request) -> WorkerRegistry:
    registry: WorkerRegistry = request.app.state.registry
    return registry


def _swept_registry(request: Request) -> WorkerRegistry:
    registry = _registry(request)
    registry.sweep()
    return registry


@router.post("/register")
async def register(status: WorkerStatus, request: Request) -> HeartbeatResponse:
    _registry(request).upsert(status)
    return HeartbeatResponse()


@router.post("/heartbeat")
async def heartbeat(status: WorkerStatus, request: Request) -> HeartbeatResponse:
    # The same operation as /register: a heartbeat from an unknown or evicted worker re-registers it.
    _registry(request).upsert(status)
    return HeartbeatResponse()


@router.post("/unregister")
async def unregister(body: UnregisterRequest, request: Request) -> HeartbeatResponse:
    # Idempotent: a worker retrying after a lost response must not see an error.
    removed = _registry(request).remove(body.worker_id)
    return HeartbeatResponse(accepted=removed)


def _warming_up(request: Request) -> bool:
    """Soon after a (re)start the registry is still filling from heartbeats."""
    return bool(request.app.state.clock() < request.app.state.warm_until)


@router.post("/dispatch")
async def dispatch_route(body: DispatchRequest, request: Request) -> DispatchResponse:
    counter = request.app.state.metrics.dispatch
    try:
        chosen = _dispatch(body, request)
    except TokenyardError as exc:
        counter.labels(request.app.state.policy_name, exc.code).inc()
        logger.info("no worker for %s: %s", body.model, exc.code)
        raise
    counter.labels(request.app.state.policy_name, "dispatched").inc()
    logger.debug("dispatched %s to %s", body.model, chosen.worker_id)
    return chosen


def _dispatch(body: DispatchRequest, request: Request) -> DispatchResponse:
    policy: Policy = request.app.state.policy
    try:
        return dispatch(_swept_registry(request), policy, body.model, body.exclude, body.tenant)
    except ModelLoadingError:
        raise
    except (ModelNotFoundError, NoHealthyWorkerError):
        if not _warming_up(request):
            raise
        # Not "does not exist": a worker may simply not have sent its first heartbeat here yet.
        raise NoHealthyWorkerError(
            "The controller has just started and is still hearing from its workers; retry shortly.",
            code=ErrorCode.REGISTRY_WARMING_UP,
            retry_after=1.0,
        ) from None


@router.post("/report_failure")
async def report_failure(body: FailureReport, request: Request) -> FailureReportResponse:
    """A gateway could not reach a worker: probe it now and evict it at once if it does not answer,
    rather than waiting three heartbeat intervals."""
    registry = _registry(request)
    entry = registry.get(body.worker_id)
    if entry is None:
        return FailureReportResponse(evicted=False)
    client: httpx.AsyncClient = request.app.state.probe_client
    try:
        response = await client.get(f"{entry.status.address}/health")
        alive = response.status_code == 200
    except httpx.HTTPError:
        alive = False
    if alive:
        logger.info("worker %s reported failing (%s) but answers its probe", body.worker_id, body.error)
        return FailureReportResponse(evicted=False)
    return FailureReportResponse(evicted=registry.evict(body.worker_id, f"failed probe after: {body.error}"))


@router.get("/workers")
async def workers(request: Request) -> WorkerList:
    return WorkerList(workers=_swept_registry(request).workers())


@router.get("/models")
async def models(request: Request) -> ModelList:
    registry = _swept_registry(request)
    return ModelList(models=registry.models(), loading=registry.loading_models())


@router.get("/routes")
async def routes(request: Request) -> RouteTable:
    table = _swept_registry(request).routes()
    table.complete = not _warming_up(request)
    return table


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
