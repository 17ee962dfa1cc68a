"""Verifying API keys for a gateway: the store behind a short-lived in-memory cache.

A verified key is served from memory for `auth.key_cache_seconds`; any change to keys or tenants
(the store's access counter, polled at least every second, or the Redis access version, read on
every request) empties the cache, so a revoked key is refused within a poll, or at once with Redis.
While the store cannot be reached the gateway says "degraded" and keeps serving the keys it had
verified (past their cache time: locking out every known user during a database outage would be
worse than a revocation taking effect when the database is back); keys it has never seen get 503.
Cache entries are keyed by the key's SHA-256 digest, never by the key itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from tokenyard.errors import AuthenticationError, NoHealthyWorkerError
from tokenyard.governance.access_version import AccessVersion
from tokenyard.governance.keys import find_key, key_digest, key_state
from tokenyard.governance.principal import Limits, Principal
from tokenyard.governance.tenants import access_version
from tokenyard.store import ApiKey, Store
from tokenyard.store.models import utcnow

logger = logging.getLogger(__name__)

MAX_CACHED_KEYS = 100_000
STORE_ERRORS = (SQLAlchemyError, OSError)


class AuthUnavailableError(NoHealthyWorkerError):
    """The store is unreachable and this key has not been verified before (503)."""


def principal_of(key: ApiKey) -> Principal:
    """What a key may do: its own settings, within its tenant's."""
    tenant = key.tenant
    models: frozenset[str] | None = None
    for allowed in (tenant.models, key.models):
        if allowed is not None:
            models = frozenset(allowed) if models is None else models & frozenset(allowed)
    return Principal(
        tenant=tenant.name,
        key_prefix=key.prefix,
        models=models,
        key_limits=Limits(key.rpm, key.tpm, key.max_parallel),
        tenant_limits=Limits(tenant.rpm, tenant.tpm, tenant.max_parallel),
        key_networks=tuple(key.ip_allowlist or ()),
        tenant_networks=tuple(tenant.ip_allowlist or ()),
    )


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    verified_at: float
    expires_at: datetime | None


class KeyVerifier:
    def __init__(
        self,
        store: Store,
        cache_seconds: float,
        redis_version: AccessVersion | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.degraded_reason: str | None = None
        self._redis_version = redis_version
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._store_seen: int | None = None
        self._redis_seen: int | None = None

    async def verify(self, key: str) -> Principal:
        """The principal for `key`; AuthenticationError (401) or AuthUnavailableError (503) otherwise."""
        await self._check_redis_version()
        digest = key_digest(key)
        entry = self._cache.get(digest)
        if entry is not None and self._fresh(entry):
            return entry.principal
        try:
            principal, expires_at = await asyncio.to_thread(self._lookup, key)
        except STORE_ERRORS as exc:
            self._mark_degraded(exc)
            if entry is not None and (entry.expires_at is None or entry.expires_at > utcnow()):
                return entry.principal
            raise AuthUnavailableError("API keys cannot be verified right now; retry shortly.", retry_after=5) from None
        self._mark_healthy()
        self._remember(digest, principal, expires_at)
        return principal

    def _fresh(self, entry: _Entry) -> bool:
        if entry.expires_at is not None and entry.expires_at <= utcnow():
            return False
        return self._clock() - entry.verified_at < self.cache_seconds

    def _lookup(self, key: str) -> tuple[Principal, datetime | None]:
        with self.store.session() as session:
            record = find_key(session, key)
            if record is None:
                raise AuthenticationError("Incorrect API key provided.")
            state = key_state(record, utcnow())
            if state != "active":
                raise AuthenticationError(f"The API key {record.prefix} is {state}.")
            return principal_of(record), record.expires_at

    def _remember(self, digest: str, principal: Principal, expires_at: datetime | None) -> None:
        self._cache[digest] = _Entry(principal, self._clock(), expires_at)
        self._cache.move_to_end(digest)
        while len(self._cache) > MAX_CACHED_KEYS:
            self._cache.popitem(last=False)

    async def _check_redis_version(self) -> None:
        if self._redis_version is None:
            return
        version = await self._redis_version.read()
        if version is not None and version != self._redis_seen:
            self._redis_seen = version
            self._cache.clear()

    async def poll_store_version(self) -> None:
        """One poll of the store's access counter; empties the cache when it moved."""
        try:
            version = await asyncio.to_thread(access_version, self.store)
        except STORE_ERRORS as exc:
            self._mark_degraded(exc)
            return
        self._mark_healthy()
        if version != self._store_seen:
            self._store_seen = version
            self._cache.clear()

    async def poll_forever(self, interval: float) -> None:
        while True:
            await self.poll_store_version()
            await asyncio.sleep(interval)

    def _mark_degraded(self, exc: Exception) -> None:
        reason = f"the store is unreachable ({type(exc).__name__}); serving keys verified before"
        if self.degraded_reason is None:
            logger.warning("auth degraded: %s", reason)
        self.degraded_reason = reason

    def _mark_healthy(self) -> None:
        if self.degraded_reason is not None:
            logger.info("auth recovered: the store answers again")
        self.degraded_reason = None
