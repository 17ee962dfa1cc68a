"""Finds a worker for a model: one controller lookup per request, with the last routes kept.

The controller decides (it sees every worker's queue); the gateway keeps the last route table so
it can go on serving from it when the controller cannot be reached, and skips the lookup when that
fresh table leaves exactly one worker to choose (a retry, with workers excluded, always asks).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Protocol

import httpx

from tokenyard.errors import ErrorCode, ModelNotFoundError, NoHealthyWorkerError, error_from_body
from tokenyard.protocol.internal import (
    DispatchRequest,
    DispatchResponse,
    FailureReport,
    ModelInfo,
    ModelList,
    RouteTable,
)

logger = logging.getLogger(__name__)
SOLE_ROUTE_MAX_AGE = 5.0  # seconds: a route table this fresh may stand in for the controller's choice


class FailoverObserver(Protocol):
    """Who counts failovers (the gateway's metrics)."""

    def retried(self, model: str) -> None: ...

    def resumed(self, model: str) -> None: ...


class Router:
    def __init__(
        self,
        client: httpx.AsyncClient,
        controller_url: str,
        models_ttl: float,
        observer: FailoverObserver | None = None,
    ) -> None:
        self._client = client
        self.observer = observer  # told of every retry and resumed stream
        self._url = controller_url.rstrip("/")
        self._models_ttl = models_ttl
        self._models: list[ModelInfo] = []
        self._loading: list[str] = []
        self._models_fetched_at = -float("inf")
        self._routes = RouteTable(routes=[])
        self._routes_fetched_at = -float("inf")
        self._turn = itertools.count()
        self._background: set[asyncio.Task[None]] = set()

    async def dispatch(
        self, model: str, exclude: list[str] | None = None, tenant: str | None = None
    ) -> DispatchResponse:
        """The worker to send `tenant`'s request to; raises 404/503 errors the controller reports."""
        if not exclude and (sole := self._sole_worker(model, tenant)) is not None:
            return sole  # the controller could only name this one: no round trip (a few ms of CPU each)
        body = DispatchRequest(model=model, exclude=exclude or [], tenant=tenant)
        try:
            response = await self._client.post(f"{self._url}/dispatch", content=body.model_dump_json(), timeout=5.0)
        except httpx.TransportError as exc:
            logger.warning("controller unreachable (%s); using the last known routes", exc)
            return self._from_cached_routes(model, body.exclude, tenant)
        if response.status_code != 200:
            error = error_from_body(response.status_code, _json_or_none(response), _retry_after(response))
            if error.code == ErrorCode.REGISTRY_WARMING_UP.value and self._knows(model):
                return self._from_cached_routes(model, body.exclude, tenant)
            raise error
        return DispatchResponse.model_validate_json(response.content)

    async def models(self) -> list[ModelInfo]:
        """Models with a healthy worker, cached for `models_ttl` seconds."""
        if time.monotonic() - self._models_fetched_at < self._models_ttl:
            return self._models
        try:
            response = await self._client.get(f"{self._url}/models", timeout=5.0)
            response.raise_for_status()
            listing = ModelList.model_validate_json(response.content)
            self._models, self._loading = listing.models, listing.loading
            self._models_fetched_at = time.monotonic()
            await self.refresh_routes()
        except httpx.HTTPError as exc:
            logger.warning("controller unreachable (%s); listing the last known models", exc)
        return self._models

    async def refresh_routes(self) -> None:
        try:
            response = await self._client.get(f"{self._url}/routes", timeout=5.0)
            response.raise_for_status()
            table = RouteTable.model_validate_json(response.content)
        except httpx.HTTPError as exc:
            logger.debug("could not refresh routes: %s", exc)
            return
        self._routes_fetched_at = time.monotonic()
        if not table.complete:
            # A restarted controller has not heard from every worker yet: keep what it lacks.
            known = {route.model for route in table.routes}
            table.routes += [route for route in self._routes.routes if route.model not in known]
        self._routes = table

    async def keep_routes_fresh(self, interval: float) -> None:
        """Refresh the route table forever, so a controller outage finds it recent."""
        while True:
            await self.refresh_routes()
            await asyncio.sleep(interval)

    async def ready(self) -> bool:
        return any(info.num_workers > 0 for info in await self.models())

    def loading(self) -> list[str]:
        """Models still loading on their workers, as of the last model listing."""
        return list(self._loading)

    def serves(self, model: str) -> bool:
        """Whether `model` is a served alias as far as the last listing and routes know (no I/O)."""
        return any(info.name == model for info in self._models) or any(
            route.model == model for route in self._routes.routes
        )

    def report_failure(self, worker_id: str, error: str) -> None:
        """Tell the controller, without waiting, that a worker could not be reached."""
        task = asyncio.create_task(self._report_failure(worker_id, error))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_failure(self, worker_id: str, error: str) -> None:
        report = FailureReport(worker_id=worker_id, error=error[:300])
        try:
            await self._client.post(f"{self._url}/report_failure", content=report.model_dump_json(), timeout=5.0)
        except httpx.HTTPError as exc:
            logger.debug("could not report worker %s: %s", worker_id, exc)
        # The cached routes must not hand this worker out again while the controller is away.
        for route in self._routes.routes:
            route.workers = [w for w in route.workers if w.worker_id != worker_id]

    def _sole_worker(self, model: str, tenant: str | None) -> DispatchResponse | None:
        """The one healthy worker that may serve `tenant`'s `model` per a fresh route table, if exactly one.

        With one candidate the controller's policy has nothing to choose, so asking it only costs the
        hop: a third of an embedding request's time on a 2-core machine (docs/benchmarks.md). With
        several, or a table older than `SOLE_ROUTE_MAX_AGE`, the controller decides."""
        if time.monotonic() - self._routes_fetched_at > SOLE_ROUTE_MAX_AGE:
            return None
        route = next((r for r in self._routes.routes if r.model == model), None)
        workers = [w for w in route.workers if w.serves(tenant)] if route is not None else []
        return workers[0] if len(workers) == 1 else None

    def _knows(self, model: str) -> bool:
        return any(route.model == model and route.workers for route in self._routes.routes)

    def _from_cached_routes(self, model: str, exclude: list[str], tenant: str | None) -> DispatchResponse:
        for route in self._routes.routes:
            if route.model == model:
                workers = [w for w in route.workers if w.worker_id not in exclude and w.serves(tenant)]
                if not workers:
                    break
                return workers[next(self._turn) % len(workers)]
        if any(route.model == model for route in self._routes.routes):
            raise NoHealthyWorkerError(f"No healthy worker serves `{model}` and the controller is unreachable.")
        raise ModelNotFoundError(model)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None
