"""API keys: made from 256 random bits, shown once, stored only as a SHA-256 digest.

A key is `ty-` followed by 43 URL-safe base64 characters (32 bytes from `secrets`). Its first
eight characters after `ty-` are its public prefix: what lists, logs and `keys revoke` use. The
database keeps the prefix and the SHA-256 of the whole key; a presented key is found by its
prefix and its digest compared with `hmac.compare_digest`. Why SHA-256 and not HMAC with a server
secret: see docs/security.md ("Key handling").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tokenyard.errors import InvalidRequestError, NotFoundError
from tokenyard.governance.tenants import (
    bump_access_version,
    check_networks,
    ensure_tenant,
    model_list,
)
from tokenyard.store import ApiKey, Store, Tenant
from tokenyard.store.models import utcnow

KeyState = Literal["active", "expired", "revoked"]
KEY_PREFIX = "ty-"
SECRET_BYTES = 32  # 256 bits
PREFIX_CHARS = 8  # public characters after "ty-"
KEY_LENGTH = len(KEY_PREFIX) + 43  # base64url of 32 bytes, unpadded
PREFIX_LENGTH = len(KEY_PREFIX) + PREFIX_CHARS


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def prefix_of(key: str) -> str | None:
    """The public prefix of something shaped like a key, else None (it cannot be one of ours)."""
    if len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
        return None
    return key[:PREFIX_LENGTH]


class KeySettings(BaseModel):
    """What `keys create` sets on a key; unset fields fall back to the tenant's defaults."""

    tenant: str
    models: list[str] | None = Field(default=None, description="unset: the tenant's models")
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_parallel: int | None = Field(default=None, ge=1)
    expires_days: float | None = Field(default=None, gt=0)
    ip_allowlist: list[str] = Field(default_factory=list)


class CreatedKey(BaseModel):
    """The only time a key's value exists outside the client: printed once, never stored."""

    key: str
    prefix: str
    tenant: str
    models: list[str] | None


class KeyView(BaseModel):
    prefix: str
    tenant: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    ip_allowlist: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    state: KeyState

    @classmethod
    def of(cls, key: ApiKey, now: datetime) -> KeyView:
        return cls(
            prefix=key.prefix,
            tenant=key.tenant.name,
            models=key.models,
            rpm=key.rpm,
            tpm=key.tpm,
            max_parallel=key.max_parallel,
            ip_allowlist=list(key.ip_allowlist or []),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            state=key_state(key, now),
        )


def key_state(key: ApiKey, now: datetime) -> KeyState:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def create_key(store: Store, settings: KeySettings) -> CreatedKey:
    """Make a key for `settings.tenant` (creating the tenant if new); the value is returned once."""
    now = utcnow()
    expires = now + timedelta(days=settings.expires_days) if settings.expires_days else None
    with store.session() as session:
        tenant = ensure_tenant(session, settings.tenant)
        key, prefix = _unused_key(session)
        record = ApiKey(
            prefix=prefix,
            key_hash=key_digest(key),
            tenant_id=tenant.id,
            models=model_list(settings.models),
            rpm=settings.rpm,
            tpm=settings.tpm,
            max_parallel=settings.max_parallel,
            ip_allowlist=check_networks(settings.ip_allowlist),
            created_at=now,
            expires_at=expires,
        )
        session.add(record)
        bump_access_version(session)
        return CreatedKey(key=key, prefix=prefix, tenant=tenant.name, models=record.models)


def _unused_key(session: Session) -> tuple[str, str]:
    """A fresh key whose public prefix no other key has (a clash is ~1 in 10^14; retried anyway)."""
    for _ in range(5):
        key = new_key()
        prefix = key[:PREFIX_LENGTH]
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            return key, prefix
    raise RuntimeError("could not draw an unused key prefix")  # 5 clashes in a row: the RNG is broken


def list_keys(store: Store, tenant: str | None = None) -> list[KeyView]:
    now = utcnow()
    with store.session() as session:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if tenant is not None:
            query = query.join(ApiKey.tenant).where(Tenant.name == tenant)
        return [KeyView.of(k, now) for k in session.scalars(query)]


def revoke_key(store: Store, prefix: str) -> KeyView:
    """Revoke the key with this public prefix (idempotent: an already revoked key stays revoked)."""
    if len(prefix) > 64:
        raise InvalidRequestError("not a key prefix", param="prefix")
    now = utcnow()
    with store.session() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
        if key is None:
            raise NotFoundError(f"no key with prefix {prefix!r}", param="prefix", code="key_not_found")
        if key.revoked_at is None:
            key.revoked_at = now
            bump_access_version(session)
        return KeyView.of(key, now)


def find_key(session: Session, key: str) -> ApiKey | None:
    """The stored key matching `key`, whatever its state; the digest compared in constant time."""
    prefix = prefix_of(key)
    if prefix is None:
        return None
    record = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    if record is None or not hmac.compare_digest(record.key_hash, key_digest(key)):
        return None
    return record
