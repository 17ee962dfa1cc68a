"""Small fakes of the router and the worker client, for the serving and generation tests.

A `FakeWorker` answers every request with the same pieces of text (a function of the request), one
token per piece, counted as a real worker counts: cumulative completion tokens, a resumed request
continuing after the tokens it carries. It can refuse a request when it is opened, or lose its
connection after a number of chunks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.types import Message

from tokenyard.errors import ModelNotFoundError, NoHealthyWorkerError, TokenyardError, WorkerError
from tokenyard.gateway.generation import GenerationService
from tokenyard.observability.gateway import GatewayMetrics
from tokenyard.protocol.finish import EngineFinishReason
from tokenyard.protocol.internal import DispatchResponse, GenerateChunk, GenerateRequest, ModelKind, TokenLogprobs

PROMPT_TOKENS = 4


def hello(request: GenerateRequest) -> list[str]:
    return ["Hel", "lo", "!"]


@dataclass
class FakeWorker:
    worker_id: str
    answer: Callable[[GenerateRequest], list[str]] = hello
    finish: EngineFinishReason = "stop"
    cached_tokens: int = 0
    refuse: TokenyardError | None = None  # raised when a stream is opened
    refused_id: str | None = None  # refuse only this request (None: every request)
    break_after: int | None = None  # chunks sent before the connection breaks (each stream)
    delay: float = 0.0  # seconds before each chunk
    opened: list[GenerateRequest] = field(default_factory=list)

    def stream(self, request: GenerateRequest) -> FakeStream:
        self.opened.append(request)
        if self.refuse is not None and self.refused_id in (None, request.request_id):
            raise self.refuse
        return FakeStream(self, request)

    def chunks(self, request: GenerateRequest) -> list[GenerateChunk]:
        pieces = self.answer(request)
        start = len(request.resume.token_ids) if request.resume else 0
        logprobs = request.sampling.logprobs is not None
        return [
            GenerateChunk(
                text=pieces[i],
                token_ids=[100 + i],
                num_new_tokens=1,
                prompt_tokens=PROMPT_TOKENS,
                completion_tokens=i + 1,
                cached_tokens=self.cached_tokens,
                # A token's logprob is minus its length: candidates rank by how short they are.
                logprobs=[TokenLogprobs(token=pieces[i], logprob=-len(pieces[i]), bytes=[])] if logprobs else None,
                prompt_text=request.prompt if request.echo and i == start else None,
                finish_reason=self.finish if i == len(pieces) - 1 else None,
            )
            for i in range(start, len(pieces))
        ]


class FakeStream:
    def __init__(self, worker: FakeWorker, request: GenerateRequest) -> None:
        self.worker, self.request = worker, request
        self.address, self.worker_id = f"http://{worker.worker_id}", worker.worker_id
        self.closed = False

    async def chunks(self) -> AsyncGenerator[GenerateChunk, None]:
        for sent, chunk in enumerate(self.worker.chunks(self.request)):
            if sent == self.worker.break_after:
                raise WorkerError(f"lost {self.worker_id}")
            await asyncio.sleep(self.worker.delay)  # 0: still lets the other choices' streams interleave
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


class FakeWorkers:
    """The worker client: streams from the named fake workers; records opened streams and aborts."""

    def __init__(self, *workers: FakeWorker) -> None:
        self.workers = {w.worker_id: w for w in workers}
        self.streams: list[FakeStream] = []
        self.aborted: list[tuple[str, str]] = []

    async def open_generation(self, target: DispatchResponse, request: GenerateRequest) -> FakeStream:
        stream = self.workers[target.worker_id].stream(request)
        self.streams.append(stream)
        return stream

    async def abort(self, address: str, request_id: str) -> None:
        self.aborted.append((address, request_id))


class FakeRouter:
    """Dispatches model "m" to the workers in order, skipping excluded ones; counts in real metrics."""

    def __init__(self, *worker_ids: str) -> None:
        self.ids = list(worker_ids)
        self.reported: list[str] = []
        self.excludes: list[list[str]] = []  # what each dispatch was told to skip
        self.observer = GatewayMetrics(CollectorRegistry())

    async def dispatch(
        self, model: str, exclude: list[str] | None = None, tenant: str | None = None
    ) -> DispatchResponse:
        self.excludes.append(list(exclude or []))
        if model != "m":
            raise ModelNotFoundError(model)
        left = [w for w in self.ids if w not in (exclude or [])]
        if not left:
            raise NoHealthyWorkerError("none left")
        return DispatchResponse(
            worker_id=left[0], address=f"http://{left[0]}", kind=ModelKind.GENERATE, context_length=99
        )

    def report_failure(self, worker_id: str, error: str) -> None:
        self.reported.append(worker_id)

    def count(self, metric: str) -> float:
        return self.observer.registry.get_sample_value(metric, {"model": "m"}) or 0.0


def service(*workers: FakeWorker, max_attempts: int = 3, timeout: float = 10.0) -> GenerationService:
    """A GenerationService over fake workers, dispatched in the order given."""
    return GenerationService(FakeRouter(*(w.worker_id for w in workers)), FakeWorkers(*workers), max_attempts, timeout)


def client_request(path: str = "/v1/chat/completions") -> Request:
    """A request whose client stays connected (the serving code watches for it leaving)."""

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}, receive)


def sse_events(parts: list[str]) -> list[Any]:
    """A stream's events, parsed; [DONE] stays the string "[DONE]"."""
    events = []
    for frame in "".join(parts).split("\n\n"):
        if frame:
            assert frame.startswith("data: "), frame
            data = frame[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
