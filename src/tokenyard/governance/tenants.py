"""Tenants: create, list and change a tenant's defaults (models, rate limits, IP allow-list).

Every change bumps the store's `access` counter in the same transaction, so every gateway drops
what it cached about keys and tenants within one poll (docs/security.md, "several gateways").
"""

from __future__ import annotations

import unicodedata
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tokenyard.errors import ConflictError, InvalidRequestError
from tokenyard.governance.networks import normalise_networks
from tokenyard.store import Counter, Store, Tenant

ACCESS_COUNTER = "access"
ANY_MODEL = "*"
MAX_NAME_LENGTH = 128


class TenantSettings(BaseModel):
    """The fields `tenants create/set` may change; None leaves a field as it is."""

    models: list[str] | None = Field(default=None, description='models its keys may use; null or ["*"]: every')
    rpm: int | None = Field(default=None, ge=0, description="requests per minute; 0 or null: no limit")
    tpm: int | None = Field(default=None, ge=0, description="tokens (prompt + max_tokens) per minute; 0: no limit")
    max_parallel: int | None = Field(default=None, ge=0, description="requests at once; 0: no limit")
    ip_allowlist: list[str] | None = None


class TenantView(BaseModel):
    name: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    ip_allowlist: list[str]
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        return cls(
            name=tenant.name,
            models=tenant.models,
            rpm=tenant.rpm,
            tpm=tenant.tpm,
            max_parallel=tenant.max_parallel,
            ip_allowlist=list(tenant.ip_allowlist or []),
            created_at=tenant.created_at,
        )


def check_name(name: str) -> str:
    """A tenant name: 1-128 printable characters (Chinese welcome), no surrounding spaces."""
    if not name or len(name) > MAX_NAME_LENGTH or name != name.strip():
        raise InvalidRequestError(f"tenant name must be 1-{MAX_NAME_LENGTH} characters without surrounding spaces")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise InvalidRequestError("tenant name must not contain control or invisible characters")
    return name


def bump_access_version(session: Session) -> None:
    """Count one change to tenants or keys (gateways poll this to drop cached keys)."""
    changed = session.execute(update(Counter).where(Counter.name == ACCESS_COUNTER).values(value=Counter.value + 1))
    if not getattr(changed, "rowcount", 0):
        session.add(Counter(name=ACCESS_COUNTER, value=1))


def access_version(store: Store) -> int:
    with store.session() as session:
        value = session.scalar(select(Counter.value).where(Counter.name == ACCESS_COUNTER))
    return int(value or 0)


def find_tenant(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def _apply(tenant: Tenant, changes: TenantSettings) -> None:
    for field in changes.model_fields_set:
        value = getattr(changes, field)
        if field == "ip_allowlist":
            value = check_networks(value or [])
        elif field == "models":
            value = model_list(value)
        elif value == 0:
            value = None  # a limit of 0 removes the limit
        setattr(tenant, field, value)


def model_list(models: list[str] | None) -> list[str] | None:
    """Model names without blanks or duplicates; None or ["*"] means every model."""
    if models is None:
        return None
    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    return None if ANY_MODEL in names else names


def check_networks(values: list[str]) -> list[str]:
    try:
        return normalise_networks(values)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="ip_allowlist") from None


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created with no limits if it is new."""
    tenant = find_tenant(session, check_name(name))
    if tenant is None:
        tenant = Tenant(name=name, ip_allowlist=[])
        session.add(tenant)
        session.flush()
    return tenant


def create_tenant(store: Store, name: str, settings: TenantSettings | None = None) -> TenantView:
    with store.session() as session:
        if find_tenant(session, check_name(name)) is not None:
            raise ConflictError(f"tenant {name!r} already exists", param="name", code="tenant_exists")
        tenant = ensure_tenant(session, name)
        _apply(tenant, settings or TenantSettings())
        bump_access_version(session)
        return TenantView.of(tenant)


def set_tenant(store: Store, name: str, settings: TenantSettings) -> TenantView:
    """Change the given fields of `name`'s defaults, creating the tenant if it is new."""
    with store.session() as session:
        tenant = ensure_tenant(session, name)
        _apply(tenant, settings)
        session.flush()
        bump_access_version(session)
        return TenantView.of(tenant)


def list_tenants(store: Store, name: str | None = None) -> list[TenantView]:
    with store.session() as session:
        query = select(Tenant).order_by(Tenant.name)
        if name is not None:
            query = query.where(Tenant.name == name)
        return [TenantView.of(t) for t in session.scalars(query)]
