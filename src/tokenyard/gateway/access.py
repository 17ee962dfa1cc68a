"""What the gateway's access layers need at run time, built in its lifespan: the key verifier
(and its poll of the store's access counter), the rate limiter, and the Redis access version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tokenyard.config import Settings
from tokenyard.governance.access_version import AccessVersion, async_client
from tokenyard.governance.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from tokenyard.governance.verifier import KeyVerifier
from tokenyard.store import Store

HOLD_MARGIN = 60.0  # seconds a parallel slot outlives the request timeout, should its release be lost


@asynccontextmanager
async def governance(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    store: Store | None = app.state.store
    redis = async_client(settings.redis.url) if settings.redis.url else None
    prefix = settings.redis.key_prefix
    if redis is not None:
        app.state.access_version = AccessVersion(redis, prefix)
    poller = None
    if settings.auth.enabled:
        if store is None:
            raise RuntimeError("auth.enabled needs a store: create_app(settings, store=...)")
        verifier = KeyVerifier(store, settings.auth.key_cache_seconds, app.state.access_version)
        app.state.verifier = verifier
        hold = settings.gateway.request_timeout + HOLD_MARGIN
        limiter: Limiter = RedisLimiter(redis, prefix, hold) if redis is not None else MemoryLimiter(hold)
        app.state.limiter = limiter
        poller = asyncio.create_task(verifier.poll_forever(settings.auth.revocation_poll_interval))
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        if redis is not None:
            await redis.aclose()
