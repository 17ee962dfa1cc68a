"""The gateway app: OpenAI's /v1 routes, health and readiness, over one shared HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import State
from starlette.middleware import Middleware

from tokenyard import __version__
from tokenyard.config import Settings
from tokenyard.gateway.access import governance
from tokenyard.gateway.admin import router as admin_router
from tokenyard.gateway.admin_cluster import router as admin_cluster_router
from tokenyard.gateway.admin_usage import router as admin_usage_router
from tokenyard.gateway.auth import AdminAuthMiddleware, KeyAuthMiddleware
from tokenyard.gateway.client_address import ClientAddressMiddleware, PrincipalNetworksMiddleware
from tokenyard.gateway.filtering import ContentScreen
from tokenyard.gateway.generation import GenerationService
from tokenyard.gateway.metering import build_metering
from tokenyard.gateway.openapi import documented, drop_validation_error_schemas, error_responses
from tokenyard.gateway.outcome import OutcomeListeners, OutcomeMiddleware
from tokenyard.gateway.principal import DefaultPrincipalMiddleware, principal_of, require_model
from tokenyard.gateway.quota import QuotaMiddleware
from tokenyard.gateway.quota_gauge import keep_quota_gauge
from tokenyard.gateway.ratelimit import RateLimitMiddleware
from tokenyard.gateway.recent_requests import RecentRequests
from tokenyard.gateway.request_id import RequestIdMiddleware
from tokenyard.gateway.router import Router
from tokenyard.gateway.serving_chat import ChatServing
from tokenyard.gateway.serving_completion import CompletionServing
from tokenyard.gateway.serving_embedding import EmbeddingServing
from tokenyard.gateway.votes import router as votes_router
from tokenyard.gateway.whole_answers import open_session
from tokenyard.gateway.worker_client import WorkerClient
from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.principal import anonymous
from tokenyard.governance.verifier import KeyVerifier
from tokenyard.observability.endpoint import install_metrics_endpoint, new_registry
from tokenyard.observability.gateway import GatewayMetrics
from tokenyard.observability.http import OpenStreamsMiddleware
from tokenyard.observability.logs import LogContextMiddleware, forward_request_id, log_outcome
from tokenyard.observability.tracing import inject_trace_context
from tokenyard.protocol.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelCardList,
)
from tokenyard.store import Store
from tokenyard.web import GATEWAY_HEADER, AssumeJSONBodyMiddleware, cluster_headers, install_error_handlers
from tokenyard.webui import install_webui

ROUTE_REFRESH_SECONDS = 2.0  # how stale the routes kept for a controller outage may be
# Listing models reaches no worker, and serves the last known list when the controller is away.
MODELS_ERRORS = (401, 403, 429)


def register_routes(app: FastAPI) -> None:
    @app.get("/v1/models", response_model=ModelCardList, responses=error_responses(MODELS_ERRORS))
    async def list_models(request: Request) -> ModelCardList:
        principal = principal_of(request)
        models = await request.app.state.router.models()
        cards = [
            ModelCard(id=m.name, kind=m.kind.value, max_model_len=m.context_length)
            for m in models
            if principal.may_use(m.name) and m.reachable_by(principal.tenant)
        ]
        return ModelCardList(data=cards)

    @app.post("/v1/chat/completions", response_model=None, responses=documented(ChatCompletionResponse, streams=True))
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
        require_model(request, body.model)
        serving: ChatServing = request.app.state.chat
        return await serving.create(body, request)

    @app.post("/v1/completions", response_model=None, responses=documented(CompletionResponse, streams=True))
    async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
        require_model(request, body.model)
        serving: CompletionServing = request.app.state.completion
        return await serving.create(body, request)

    @app.post("/v1/embeddings", response_model=None, responses=documented(EmbeddingResponse))
    async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
        require_model(request, body.model)
        serving: EmbeddingServing = request.app.state.embedding
        return await serving.create(body, request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        router: Router = request.app.state.router
        ready = await router.ready()
        loading = router.loading()  # models whose workers are still loading them
        if not ready:
            status = "loading" if loading else "no healthy worker"
            return JSONResponse({"status": status, "loading": loading}, status_code=503, headers={"Retry-After": "5"})
        verifier: KeyVerifier | None = request.app.state.verifier
        if verifier is not None and verifier.degraded_reason:
            return JSONResponse({"status": "degraded", "reason": verifier.degraded_reason, "loading": loading})
        return JSONResponse({"status": "ready", "loading": loading})


def middlewares(settings: Settings, state: Callable[[], State]) -> list[Middleware]:
    """The gateway's layers, outermost first: each request passes them in this order.

    `state` returns app.state, where the lifespan puts the objects some layers need.
    """
    if settings.auth.enabled:
        principal = Middleware(KeyAuthMiddleware, verifier=lambda: state().verifier)
    else:
        principal = Middleware(DefaultPrincipalMiddleware, principal=anonymous(settings.auth.default_tenant))
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    return [
        Middleware(RequestIdMiddleware),  # first, so that every response (errors too) carries the id
        Middleware(LogContextMiddleware),  # log lines name the request (its id, tenant, model, worker)
        Middleware(OutcomeMiddleware, listeners=lambda: state().outcomes),  # every /v1 outcome, refusals too
        Middleware(ClientAddressMiddleware, allowlist=settings.ip_allowlist, trusted_proxies=settings.trusted_proxies),
        Middleware(OpenStreamsMiddleware, metrics=lambda: state().gateway_metrics),  # the open-streams gauge
        Middleware(AssumeJSONBodyMiddleware),
        Middleware(AdminAuthMiddleware, admin_key=admin_key),  # /admin/...
        principal,  # /v1: request.state.principal (401 without a valid key when auth is on)
        Middleware(PrincipalNetworksMiddleware),  # the tenant's and the key's IP allow-lists (403)
        Middleware(RateLimitMiddleware, limiter=lambda: state().limiter),  # rpm, tpm, parallel (429)
        Middleware(QuotaMiddleware),  # after the principal: reserves on the tenant's and key's quotas
    ]


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    """The gateway; its lifespan owns the one HTTP client every upstream call shares.

    `store` is the governance database (tenants, keys); tests pass their own. The app holds it on
    `app.state.store` (None when nothing in this configuration needs a database).
    The word filter's lists are read here, so that a bad list stops the start (ConfigError).
    """
    config = settings.gateway
    cluster_token = settings.cluster.secret()
    screen = ContentScreen(WordFilter.from_config(settings.filter))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        # The controller names the gateways that call it to clients that knock on its port by mistake.
        headers = {**cluster_headers(cluster_token), GATEWAY_HEADER: f"http://{config.host}:{config.port}"}
        hooks: list[Any] = [forward_request_id]  # internal calls carry the request's id (and trace)
        if settings.tracing.enabled:
            hooks.append(inject_trace_context)
        async with (
            httpx.AsyncClient(headers=headers, limits=limits, event_hooks={"request": hooks}) as client,
            open_session(headers, hooks) as whole_answers,  # embedding calls (gateway/whole_answers.py)
        ):
            router = Router(client, config.controller, config.models_cache_ttl, app.state.gateway_metrics)
            workers = WorkerClient(client, config.request_timeout, config.stall_timeout, whole_answers)
            service = GenerationService(router, workers, config.max_attempts, config.request_timeout)
            app.state.http = client
            app.state.router = router
            app.state.chat = ChatServing(service, screen)
            app.state.completion = CompletionServing(service, screen)
            app.state.embedding = EmbeddingServing(router, workers, config.max_attempts)
            refresher = asyncio.create_task(router.keep_routes_fresh(ROUTE_REFRESH_SECONDS))
            if store is not None and settings.metering_on():
                app.state.metering = build_metering(settings, store)
                app.state.metering.start(app.state.outcomes)
                app.state.gateway_metrics.journal_backlog.set_function(app.state.metering.pipeline.journal.backlog)
            background = [refresher]
            if app.state.metering is not None and app.state.metering.quotas is not None:
                gauge = app.state.gateway_metrics.quota_usage
                background.append(asyncio.create_task(keep_quota_gauge(app.state.metering.quotas, gauge)))
            async with governance(app, settings):
                yield
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if app.state.metering is not None:
                await app.state.metering.stop()

    app = FastAPI(
        title="tokenyard",
        version=__version__,
        lifespan=lifespan,
        middleware=middlewares(settings, lambda: app.state),
    )
    app.state.settings = settings
    app.state.store = store
    app.state.verifier = None  # the lifespan sets these three (gateway/access.py)
    app.state.access_version = None
    app.state.limiter = None
    app.state.outcomes = OutcomeListeners()  # metrics, metering and logs add themselves here
    registry = new_registry()
    app.state.gateway_metrics = GatewayMetrics(registry, served=lambda model: _serves(app, model))
    app.state.outcomes.add(app.state.gateway_metrics.observe)  # first: metrics never wait behind the journal
    install_metrics_endpoint(app, registry, settings.metrics, settings.admin_secret())
    app.state.outcomes.add(log_outcome)
    app.state.metering = None  # usage records, quotas and logs (gateway/metering.py), when on
    app.state.recent_requests = RecentRequests()  # the dashboard's last minutes of traffic
    app.state.outcomes.add(app.state.recent_requests.record)
    install_error_handlers(app)
    register_routes(app)
    install_webui(app)
    app.include_router(admin_router)
    app.include_router(admin_cluster_router)
    app.include_router(votes_router)
    app.include_router(admin_usage_router)
    drop_validation_error_schemas(app)
    return app


def _serves(app: FastAPI, model: str) -> bool:
    router: Router | None = getattr(app.state, "router", None)
    return router is not None and router.serves(model)
