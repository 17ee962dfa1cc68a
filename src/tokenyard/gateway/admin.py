"""The admin API (/admin/...): tenants and keys over HTTP, the same operations as the CLI.

AdminAuthMiddleware has checked the admin key before any of these routes runs. Routes are thin:
each runs one governance function in a thread (the store is synchronous) and returns its typed
view; a key's value appears only in the answer to its creation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel

from tokenyard.errors import NoHealthyWorkerError
from tokenyard.governance import keys, tenants
from tokenyard.governance.access_version import AccessVersion
from tokenyard.governance.keys import CreatedKey, KeySettings, KeyView
from tokenyard.governance.tenants import TenantSettings, TenantView
from tokenyard.governance.verifier import KeyVerifier
from tokenyard.store import Store

router = APIRouter(prefix="/admin", tags=["admin"])
T = TypeVar("T")


class NewTenant(TenantSettings):
    name: str


class TenantList(BaseModel):
    object: str = "list"
    data: list[TenantView]


class KeyList(BaseModel):
    object: str = "list"
    data: list[KeyView]


async def _call(request: Request, function: Callable[..., T], *args: Any, changes: bool = False) -> T:
    store: Store | None = request.app.state.store
    if store is None:
        raise NoHealthyWorkerError("This gateway has no store configured.", code="store_unavailable")
    result = await anyio.to_thread.run_sync(function, store, *args)
    if changes:
        version: AccessVersion | None = request.app.state.access_version
        if version is not None:
            await version.bump()  # every other gateway, on its next request
        verifier: KeyVerifier | None = request.app.state.verifier
        if verifier is not None:
            await verifier.poll_store_version()  # this gateway, at once
    return result


@router.get("/tenants")
async def list_tenants(request: Request, name: str | None = None) -> TenantList:
    return TenantList(data=await _call(request, tenants.list_tenants, name))


@router.post("/tenants", status_code=201)
async def create_tenant(body: NewTenant, request: Request) -> TenantView:
    settings = TenantSettings.model_validate(body.model_dump(exclude={"name"}, exclude_unset=True))
    return await _call(request, tenants.create_tenant, body.name, settings, changes=True)


@router.patch("/tenants/{name}")
async def set_tenant(name: str, body: TenantSettings, request: Request) -> TenantView:
    """Change the given defaults of a tenant, creating it if new (as `tokenyard tenants set`)."""
    return await _call(request, tenants.set_tenant, name, body, changes=True)


@router.get("/keys")
async def list_keys(request: Request, tenant: str | None = None) -> KeyList:
    return KeyList(data=await _call(request, keys.list_keys, tenant))


@router.post("/keys", status_code=201)
async def create_key(body: KeySettings, request: Request) -> CreatedKey:
    return await _call(request, keys.create_key, body, changes=True)


@router.delete("/keys/{prefix}")
async def revoke_key(prefix: str, request: Request) -> KeyView:
    return await _call(request, keys.revoke_key, prefix, changes=True)
