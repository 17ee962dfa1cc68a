"""The access version in Redis: one counter every change to keys or tenants increments.

With `redis.url` set, whoever revokes a key (the CLI, any gateway's admin API) increments it right
after the database commit, and every gateway reads it (one GET) before trusting a cached key: a
revocation is refused on the very next request on every gateway. Publishing the change on a
pub/sub channel would race that next request (the message and the request arrive on different
sockets), which is why the version is read rather than pushed. Without Redis, gateways poll the
store's own counter at least once a second.
"""

from __future__ import annotations

import logging

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

VERSION_KEY = "access-version"
TIMEOUT = 0.5  # seconds: a slow Redis must not hold requests; the store's poll still applies


def async_client(url: str) -> aioredis.Redis:
    """The gateway's one Redis client (access version, rate limits), with short timeouts."""
    return aioredis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)


class AccessVersion:
    """The gateway's reader of the Redis access version."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._client = client
        self._key = key_prefix + VERSION_KEY

    async def read(self) -> int | None:
        """The current version, or None when Redis cannot be asked (the store's poll covers that)."""
        try:
            value = await self._client.get(self._key)
        except (RedisError, OSError) as exc:
            logger.warning("redis unavailable for the access version: %s", type(exc).__name__)
            return None
        return int(value or 0)

    async def bump(self) -> None:
        try:
            await self._client.incr(self._key)
        except (RedisError, OSError) as exc:
            logger.warning("could not announce an access change in redis (%s); gateways see it within 1 s", exc)


def bump_sync(url: str, key_prefix: str) -> bool:
    """Increment the version from synchronous code (the CLI); False if Redis could not be reached."""
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.incr(key_prefix + VERSION_KEY)
    except (RedisError, OSError):
        return False
    return True
