"""Stream plumbing for the serving classes: merging choice streams, the SSE answer, disconnects.

`sse_answer` is what chat and text completions share once their streams are open: counting each
choice, the request's record, the usage chunk and `[DONE]`; each endpoint supplies only its events
(`ChoiceEvents`). An error after a stream has started leaves as a final SSE `error` event followed
by `[DONE]`, so a client always learns why a stream ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Sequence
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

import anyio
from fastapi import Request
from pydantic import BaseModel

from tokenyard.errors import ClientClosedRequestError, RequestTimeoutError, TokenyardError
from tokenyard.gateway.choices import ChoiceResult, track_answer, usage_of
from tokenyard.gateway.outcome import RequestTracker
from tokenyard.protocol.internal import GenerateChunk
from tokenyard.protocol.openai import Usage

logger = logging.getLogger(__name__)

T = TypeVar("T")
SSE_DONE = "data: [DONE]\n\n"
_END = object()
_EXPIRED = object()  # the request timeout, queued behind the chunks that came before it


def sse(payload: object) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def sse_error(error: Exception) -> str:
    if not isinstance(error, TokenyardError):
        logger.exception("stream failed", exc_info=error)
        error = TokenyardError("The server had an error while streaming the response.")
    return sse(error.to_dict())


def stream_chunk(chunk: BaseModel, include_usage: bool) -> dict[str, Any]:
    """A chunk's payload: with `stream_options.include_usage` every chunk has `usage` null and a last
    one carries it, as OpenAI streams; without, there is no `usage` key at all."""
    data = chunk.model_dump()
    if not include_usage:
        data.pop("usage")
    return data


class ChoiceEvents(Protocol):
    """An endpoint's side of a streamed answer: its SSE events (chat and text completions differ here)."""

    def opening(self) -> list[str]:
        """The events before any token (chat: each choice's role)."""
        ...

    def events(self, index: int, chunk: GenerateChunk) -> tuple[list[str], str]:
        """The events choice `index`'s chunk becomes, and the text they deliver (for the record)."""
        ...

    def usage(self, usage: Usage) -> str:
        """The last event before [DONE], when the client asked for usage."""
        ...


class StreamedChoice(Protocol):
    """One choice's open stream, as the answer sees it (`generation.ResumingStream`)."""

    @property
    def worker_id(self) -> str: ...

    async def aclose(self) -> None: ...


async def sse_answer(
    chunks: AsyncGenerator[tuple[int, GenerateChunk], None],
    streams: Sequence[StreamedChoice],
    render: ChoiceEvents,
    *,
    choices_per_prompt: int,
    include_usage: bool,
    tracker: RequestTracker,
) -> AsyncGenerator[str, None]:
    """A streamed answer: `render`'s events for each of the choices' `chunks` as they come, the usage
    event if asked, then [DONE]; after an error, an `error` event and [DONE].

    The request's record gets the usage and outputs however the stream ends, the client's leaving
    included; the choices' streams are closed (aborting their generations) even if it leaves before
    the first chunk was awaited.
    """
    counts = [ChoiceResult() for _ in streams]
    reading = False
    try:
        for event in render.opening():
            yield event
        reading = True  # from here `chunks` runs, and closing it closes the streams
        async with aclosing(chunks) as merged:
            async for index, chunk in merged:
                result = counts[index]
                result.count(chunk)
                tracker.on_chunk(index, chunk, streams[index].worker_id)
                events, text = render.events(index, chunk)
                if tracker.keep_content:
                    result.text += text
                for event in events:
                    yield event
                tracker.on_delivered(index, result.completion_tokens)
    except Exception as exc:
        yield sse_error(exc)
        yield SSE_DONE
        return
    finally:
        track_answer(tracker, counts, usage_of(counts, choices_per_prompt), whole=False)
        if not reading:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
    if include_usage:
        yield render.usage(usage_of(counts, choices_per_prompt))
    yield SSE_DONE


class ChunkStream(Protocol):
    def chunks(self) -> AsyncGenerator[GenerateChunk, None]: ...

    async def aclose(self) -> None: ...


async def merge_streams(
    streams: Sequence[ChunkStream], timeout: float | None = None
) -> AsyncGenerator[tuple[int, GenerateChunk], None]:
    """Chunks of several choice streams as they arrive, tagged with the choice index.

    Past `timeout` seconds it raises RequestTimeoutError; closing the streams then aborts the work.
    """
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    # The deadline arrives as an item of the queue, so each chunk is a plain `queue.get()`.
    # asyncio.wait_for (before Python 3.12) returns a chunk that is ready when its task is cancelled
    # and drops the cancellation (CPython gh-86296): a client that left a non-streamed request,
    # cancelled once by `cancel_on_disconnect`, went unnoticed while a fast worker kept chunks coming.
    loop = asyncio.get_running_loop()
    expiry = None if timeout is None else loop.call_later(timeout, queue.put_nowait, (-1, _EXPIRED))

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
            index, item = await queue.get()
            if item is _END:
                remaining -= 1
            elif item is _EXPIRED:
                raise RequestTimeoutError(f"The request did not finish within {timeout:g} s.")
            elif isinstance(item, Exception):
                raise item
            else:
                assert isinstance(item, GenerateChunk)
                yield index, item
    finally:
        if expiry is not None:
            expiry.cancel()
        for task in tasks:
            task.cancel()
        # Shielded: when the client has gone, the request's scope is cancelled, yet the worker
        # streams must still be closed so the workers abort the generations.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)


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
