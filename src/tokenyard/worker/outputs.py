"""Waiting on an engine's outputs without ever cancelling the engine's iterator.

A worker's stream sends a keepalive line whenever the engine has said nothing for a while (queued
behind other requests, a long prefill), so the gateway can tell a slow worker from a frozen one by
the silence on the wire alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from tokenyard.engine.base import GenerationOutput

KEEPALIVE_SECONDS = 2.0


class EngineOutputs:
    """`next(timeout)` returns the next output, None when nothing came in time, or raises
    StopAsyncIteration at the end; a wait that times out leaves the pending read in place."""

    def __init__(self, outputs: AsyncGenerator[GenerationOutput, None]) -> None:
        self._outputs = outputs
        self._pending: asyncio.Future[GenerationOutput] | None = None

    async def next(self, timeout: float | None = None) -> GenerationOutput | None:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._outputs.__anext__())
        done, _ = await asyncio.wait({self._pending}, timeout=KEEPALIVE_SECONDS if timeout is None else timeout)
        if not done:
            return None
        pending, self._pending = self._pending, None
        return pending.result()

    async def aclose(self) -> None:
        """Close the engine's iterator, which aborts the request if it has not finished."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
            self._pending = None
        await self._outputs.aclose()
