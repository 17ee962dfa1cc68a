"""The admin API's metering routes: usage reports and quotas (AdminAuthMiddleware guards /admin).

GET /admin/usage takes the same filters as `tokenyard usage` and answers JSON or, with
`format=csv`, the finance CSV. Quotas live at /admin/quotas/{tenant|key}/{name}: GET shows the
limits and what the current period has used, PUT changes the fields given, DELETE removes it.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tokenyard.errors import NoHealthyWorkerError, TokenyardError
from tokenyard.governance.quota_admin import QuotaChange, get_quota, remove_quota, set_quota
from tokenyard.governance.reports import GroupBy, UsageQuery, to_csv, usage_report
from tokenyard.store import Store

router = APIRouter(prefix="/admin", tags=["admin"])
Scope = Literal["tenant", "key"]


class NotFoundError(TokenyardError):
    status_code = 404
    error_type = "invalid_request_error"


def _store(request: Request) -> Store:
    store: Store | None = request.app.state.store
    if store is None:
        raise NoHealthyWorkerError("This gateway has no store configured.", code="store_unavailable")
    return store


@router.get("/usage", response_model=None)
async def usage(
    request: Request,
    tenant: str | None = None,
    since: date | None = None,
    until: date | None = None,
    group_by: GroupBy = "day",
    format: Literal["json", "csv"] = "json",
) -> Response:
    query = UsageQuery(tenant=tenant, since=since, until=until, group_by=group_by)
    lines = await anyio.to_thread.run_sync(usage_report, _store(request), query)
    currency = request.app.state.settings.billing.currency
    if format == "csv":
        return Response(to_csv(lines, group_by, currency), media_type="text/csv; charset=utf-8")
    return JSONResponse({"object": "list", "currency": currency, "data": [x.model_dump(mode="json") for x in lines]})


async def _view(request: Request, scope: Scope, name: str) -> JSONResponse:
    view = await anyio.to_thread.run_sync(get_quota, _store(request), scope, name)
    if view is None:
        raise NotFoundError(f"No quota is set on {scope} {name!r}.", param="name", code="quota_not_found")
    return JSONResponse(view.as_dict())


@router.get("/quotas/{scope}/{name}", response_model=None)
async def show_quota(scope: Scope, name: str, request: Request) -> JSONResponse:
    return await _view(request, scope, name)


@router.put("/quotas/{scope}/{name}", response_model=None)
async def change_quota(scope: Scope, name: str, body: QuotaChange, request: Request) -> JSONResponse:
    """Set the limits given in the body (null removes one); a new quota counts per month unless told."""
    await anyio.to_thread.run_sync(set_quota, _store(request), scope, name, body)
    await _reread(request)
    return await _view(request, scope, name)


@router.delete("/quotas/{scope}/{name}", response_model=None)
async def delete_quota(scope: Scope, name: str, request: Request) -> JSONResponse:
    if not await anyio.to_thread.run_sync(remove_quota, _store(request), scope, name):
        raise NotFoundError(f"No quota is set on {scope} {name!r}.", param="name", code="quota_not_found")
    await _reread(request)
    return JSONResponse({"deleted": True, "scope": scope, "name": name})


async def _reread(request: Request) -> None:
    """This gateway sees the change at once; others within their quota re-read interval (2 s)."""
    metering = getattr(request.app.state, "metering", None)
    if metering is not None and metering.quotas is not None:
        await anyio.to_thread.run_sync(metering.quotas.refresh)
