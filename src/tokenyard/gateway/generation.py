"""The fan-out/failover service behind chat and text completions.

A request's choices (`gateway.request_mapping` made one GenerateRequest per choice) are all opened
on the one worker that a single dispatch picked; if it fails before streaming, every choice moves to
another worker (`gateway.failover`). A choice whose worker breaks mid-stream is resumed on another
worker by its `ResumingStream`, without a gap or a duplicate. The service depends only on the narrow
`Dispatcher` and `GenerationClient` interfaces, so tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Protocol

from tokenyard.errors import WorkerError
from tokenyard.gateway.choices import ChoiceResult
from tokenyard.gateway.failover import Dispatcher, with_failover
from tokenyard.gateway.outcome import RequestTracker
from tokenyard.gateway.streaming import merge_streams
from tokenyard.protocol.internal import DispatchResponse, GenerateChunk, GenerateRequest, ResumeState

if TYPE_CHECKING:
    from tokenyard.gateway.filtering import OutputGuard

logger = logging.getLogger(__name__)


class WorkerStream(Protocol):
    """One choice's open stream on a worker (`worker_client.GenerationStream`)."""

    @property
    def address(self) -> str: ...

    @property
    def worker_id(self) -> str: ...

    def chunks(self) -> AsyncGenerator[GenerateChunk, None]:
        """The chunks to the one with a finish reason; WorkerError if the worker is lost before it."""
        ...

    async def aclose(self) -> None: ...


class GenerationClient(Protocol):
    """What the service asks of the workers (`worker_client.WorkerClient`)."""

    async def open_generation(self, target: DispatchResponse, request: GenerateRequest) -> WorkerStream: ...

    async def abort(self, address: str, request_id: str) -> None: ...


class GenerationService:
    """Dispatches a fan-out of worker requests and opens their streams, failing over if needed."""

    def __init__(
        self, router: Dispatcher, workers: GenerationClient, max_attempts: int, request_timeout: float
    ) -> None:
        self.router = router
        self.workers = workers
        self.max_attempts = max_attempts
        self.request_timeout = request_timeout
        self._background: set[asyncio.Task[None]] = set()

    def abort_later(self, address: str, request_id: str) -> None:
        """Tell a worker to stop a generation nobody will read, without making the caller wait."""
        task = asyncio.create_task(self.workers.abort(address, request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def merged(
        self, streams: list[ResumingStream], guard: OutputGuard | None = None
    ) -> AsyncGenerator[tuple[int, GenerateChunk], None]:
        """The choices' chunks as they come, bounded by the request timeout, through the word filter's
        guard if there is one (it may stop a choice: its worker is then told to abort)."""
        chunks = merge_streams(streams, self.request_timeout)
        return chunks if guard is None else guard.filter(chunks, lambda index: streams[index].stop())

    async def open(self, model: str, requests: list[GenerateRequest]) -> list[ResumingStream]:
        """Open every choice's stream on one worker, trying another worker if that one fails."""
        opened = await with_failover(
            self.router,
            model,
            lambda target: self._open_on(target, requests),
            self.max_attempts,
            tenant=requests[0].tenant,
        )
        return [ResumingStream(self, model, request, stream) for request, stream in zip(requests, opened, strict=True)]

    async def reopen(self, model: str, request: GenerateRequest, exclude: list[str]) -> WorkerStream:
        """One request again, on a worker not in `exclude` (used to resume a broken stream)."""
        streams = await with_failover(
            self.router,
            model,
            lambda target: self._open_on(target, [request]),
            self.max_attempts,
            exclude,
            request.tenant,
        )
        return streams[0]

    async def _open_on(self, target: DispatchResponse, requests: list[GenerateRequest]) -> list[WorkerStream]:
        """Open every choice's stream, or none: an error closes those already open."""
        opened = await asyncio.gather(
            *(self.workers.open_generation(target, r) for r in requests), return_exceptions=True
        )
        failures = [o for o in opened if isinstance(o, BaseException)]
        streams = [o for o in opened if not isinstance(o, BaseException)]
        if failures:
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
            raise failures[0]
        return streams

    async def run(
        self,
        model: str,
        requests: list[GenerateRequest],
        tracker: RequestTracker | None = None,
        guard: OutputGuard | None = None,
    ) -> list[ChoiceResult]:
        """Open the choices' streams and collect them whole (the non-streamed answer)."""
        return await self.collect(await self.open(model, requests), tracker, guard)

    async def collect(
        self, streams: list[ResumingStream], tracker: RequestTracker | None = None, guard: OutputGuard | None = None
    ) -> list[ChoiceResult]:
        results = [ChoiceResult() for _ in streams]
        async with aclosing(self.merged(streams, guard)) as merged:
            async for index, chunk in merged:
                results[index].add(chunk)
                results[index].worker = streams[index].worker_id
                if tracker is not None:
                    tracker.on_chunk(index, chunk, streams[index].worker_id)
        return results


class ResumingStream:
    """One choice's stream that outlives its worker.

    If the worker's connection breaks mid-stream, the request is sent to another worker with the
    tokens generated so far and the text already delivered; that worker sends the undelivered text
    and continues, so the client sees one stream with no gap and no duplicate.
    """

    def __init__(self, service: GenerationService, model: str, request: GenerateRequest, stream: WorkerStream) -> None:
        self._service = service
        self._model = model
        self._request = request
        self._stream = stream
        self._finished = False
        self._stopped = False
        self.resumes = 0

    @property
    def worker_id(self) -> str:
        """The worker streaming now (another one after a resume)."""
        return self._stream.worker_id

    async def chunks(self) -> AsyncGenerator[GenerateChunk, None]:
        token_ids: list[int] = []
        text = ""
        tried = [self._stream.worker_id]
        while True:
            try:
                async with aclosing(self._stream.chunks()) as chunks:
                    async for chunk in chunks:
                        token_ids.extend(chunk.token_ids)
                        text += chunk.text
                        self._finished = chunk.finish_reason is not None
                        yield chunk
                return
            except WorkerError as exc:
                if self._stopped:
                    return  # the worker ended the stream because it was told to stop
                if len(tried) >= self._service.max_attempts:
                    raise
                self._service.router.report_failure(self._stream.worker_id, exc.message)
                logger.warning(
                    "stream %s broke after %d tokens (%s); resuming", self._request.request_id, len(token_ids), exc
                )
                self._stream = await self._service.reopen(self._model, self._resumed(token_ids, text), tried)
                tried.append(self._stream.worker_id)
                self.resumes += 1
                if self._service.router.observer is not None:
                    self._service.router.observer.resumed(self._model)

    def _resumed(self, token_ids: list[int], text: str) -> GenerateRequest:
        if not token_ids:
            return self._request
        return self._request.model_copy(update={"resume": ResumeState(token_ids=token_ids, text_sent=text)})

    def stop(self) -> None:
        """The gateway wants no more of this choice (the word filter stopped it): the worker aborts the
        generation and frees its slot; the stream's end without a finish reason is then expected."""
        if not self._finished and not self._stopped:
            self._service.abort_later(self._stream.address, self._request.request_id)
        self._stopped = True

    async def aclose(self) -> None:
        await self._stream.aclose()
        if not self._finished and not self._stopped:
            # Closing the connection already tells the worker; the explicit abort does not depend
            # on the worker noticing a half-closed socket.
            self._service.abort_later(self._stream.address, self._request.request_id)
            self._finished = True
