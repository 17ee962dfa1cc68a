"""Stream plumbing for the serving classes: merging choice streams, SSE framing, disconnects.

An error after a stream has started leaves as a final SSE `error` event followed by `[DONE]`,
so a client always learns why a stream ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from contextlib import aclosing
from typing import Protocol, TypeVar

import anyio
from fastapi import Request

from tokenyard.errors import ClientClosedRequestError, RequestTimeoutError, TokenyardError
from tokenyard.protocol.internal import GenerateChunk

logger = logging.getLogger(__name__)

T = TypeVar("T")
SSE_DONE = "data: [DONE]\n\n"
_END = object()


def sse(payload: object) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def sse_error(error: Exception) -> str:
    if not isinstance(error, TokenyardError):
        logger.exception("stream failed", exc_info=error)
        error = TokenyardError("The server had an error while streaming the response.")
    return sse(error.to_dict())


class ChunkStream(Protocol):
    def chunks(self) -> AsyncGenerator[GenerateChunk, None]: ...

    async def aclose(self) -> None: ...


async def merge_streams(
    streams: Sequence[ChunkStream], timeout: float | None = None
) -> AsyncGenerator[tuple[int, GenerateChunk], None]:
    """Chunks of several choice streams as they arrive, tagged with the choice index.

    Past `timeout` seconds it raises RequestTimeoutError; closing the streams then aborts the work.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, stream: ChunkStream) -> None:
        try:
            async with aclosing(stream.chunks()) as chunks:
                async for chunk in chunks:
                    await queue.put((index, chunk))
            await queue.put((index, _END))
        except Exception as exc:
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await _next_item(queue, deadline, timeout)
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                assert isinstance(item, GenerateChunk)
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        # Shielded: when the client has gone, the request's scope is cancelled, yet the worker
        # streams must still be closed so the workers abort the generations.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)


async def _next_item(
    queue: asyncio.Queue[tuple[int, object]], deadline: float | None, timeout: float | None
) -> tuple[int, object]:
    if deadline is None:
        return await queue.get()
    try:
        return await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise RequestTimeoutError(f"The request did not finish within {timeout:g} s.") from None


async def _client_gone(request: Request) -> None:
    """Returns once the server reports the client's connection closed (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away (which closes the worker stream and
    so aborts the generation there).

    A waiting receive() keeps the server reading the socket, so a closed connection is noticed at
    once; polling `is_disconnected()` can miss it while the server has paused reading.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientClosedRequestError("The client closed the connection.")
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
