"""The dashboard's admin API: the cluster's workers and the gateway's recent traffic.

`GET /admin/workers` is the controller's worker list joined with each worker's engine counters
(KV cache blocks, tokens per second), fetched concurrently with a short timeout so that one slow
worker costs a blank cell, not a slow page. `GET /admin/requests` reads the gateway's own ring of
recent requests (gateway/recent_requests.py). AdminAuthMiddleware guards every /admin path.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from tokenyard.errors import NoHealthyWorkerError
from tokenyard.gateway.recent_requests import RecentRequests, RequestSeries
from tokenyard.protocol.internal import WorkerInfo, WorkerList

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", tags=["admin"])
STATS_TIMEOUT_S = 2.0


class WorkerRow(WorkerInfo):
    """A worker as the dashboard shows it: the controller's view plus the engine's own counters."""

    tokens_per_second: float | None = None
    kv_blocks_used: int | None = None
    kv_blocks_total: int | None = None
    kv_usage: float | None = Field(default=None, description="fraction of the KV cache's blocks in use")


class WorkerOverview(BaseModel):
    object: str = "list"
    data: list[WorkerRow]


async def _engine_stats(client: httpx.AsyncClient, address: str) -> dict[str, object] | None:
    try:
        response = await client.get(f"{address.rstrip('/')}/stats", timeout=STATS_TIMEOUT_S)
        response.raise_for_status()
        stats: dict[str, object] = response.json()
        return stats
    except (httpx.HTTPError, ValueError) as exc:
        logger.debug("no engine stats from %s: %s", address, exc)
        return None


def _row(worker: WorkerInfo, stats: dict[str, object] | None) -> WorkerRow:
    row = WorkerRow.model_validate(worker.model_dump())
    if stats is None:
        return row
    speed = stats.get("tokens_per_second")
    row.tokens_per_second = float(speed) if isinstance(speed, (int, float)) else None
    extra = stats.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get("kv_blocks_total"), (int, float)):
        total, free = int(extra["kv_blocks_total"]), int(extra.get("kv_blocks_free", 0))
        row.kv_blocks_total, row.kv_blocks_used = total, total - free
        row.kv_usage = (total - free) / total if total else None
    return row


@router.get("/workers")
async def list_workers(request: Request) -> WorkerOverview:
    client: httpx.AsyncClient = request.app.state.http
    controller = request.app.state.settings.gateway.controller.rstrip("/")
    try:
        response = await client.get(f"{controller}/workers", timeout=5.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise NoHealthyWorkerError(f"The controller at {controller} cannot be reached: {exc}") from exc
    workers = WorkerList.model_validate_json(response.content).workers
    stats = await asyncio.gather(*(_engine_stats(client, w.address) for w in workers))
    return WorkerOverview(data=[_row(w, s) for w, s in zip(workers, stats, strict=True)])


@router.get("/requests")
async def recent_requests(
    request: Request,
    minutes: float = Query(default=15.0, gt=0, le=60, description="how far back"),
    bucket_seconds: float = Query(default=10.0, ge=1, le=600, description="width of one point"),
) -> RequestSeries:
    recent: RecentRequests = request.app.state.recent_requests
    return recent.series(minutes * 60, bucket_seconds)
