"""One record per gateway request, finished exactly once, handed to listeners.

`OutcomeMiddleware` opens a `RequestTracker` on `request.state.outcome` when a `/v1` request
arrives; the serving code fills in the model, the worker, token counts as the worker counted them
and what reached the client. The record is finished exactly once: just before the response's last
bytes are sent (so a listener that journals it to disk does so before the client has its answer),
or, if that never happens (the client went away, the app raised), when the request's handling ends.
Listeners (metrics, metering, conversation logs) are called in order; one that fails is logged and
does not stop the others or the response.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenyard.protocol.internal import GenerateChunk
from tokenyard.protocol.outcome import RequestOutcome

__all__ = ["OutcomeListeners", "OutcomeMiddleware", "RequestOutcome", "RequestTracker", "tracker_of"]

logger = logging.getLogger(__name__)

Listener = Callable[["RequestOutcome"], Awaitable[None] | None]


class RequestTracker:
    """The mutable side of a request's record while it runs; `finish` freezes it once."""

    def __init__(self, request_id: str, method: str, endpoint: str, listeners: OutcomeListeners | None = None) -> None:
        self.request_id = request_id
        self.record_id = uuid.uuid4().hex
        self.method = method
        self.endpoint = endpoint
        self.started_at = datetime.now(timezone.utc)
        self._start = time.monotonic()
        self._listeners = listeners
        self.model: str | None = None
        self.worker: str | None = None
        self.model_revision: str | None = None
        self.stream = False
        self.keep_content = listeners.keep_content if listeners is not None else False
        self.request: dict[str, Any] | None = None
        self.outputs: list[str] = []
        self.finish_reasons: list[str | None] = []
        self.prompt_tokens = self.completion_tokens = self.cached_tokens = 0
        self._generated: dict[int, int] = {}
        self._delivered: dict[int, int] = {}
        self._ttft: float | None = None
        self._hooks: list[Listener] = []
        self.outcome: RequestOutcome | None = None

    def on_finish(self, hook: Listener) -> None:
        """Call `hook` with this request's record once it is finished (after the app-wide listeners)."""
        self._hooks.append(hook)

    def begin(self, model: str, body: BaseModel, *, stream: bool = False) -> None:
        """What the serving code knows before dispatch: the model and (when kept) the request."""
        self.model = model
        self.stream = stream
        if self.keep_content:
            self.request = body.model_dump(mode="json", exclude_none=True)

    def on_chunk(self, index: int, chunk: GenerateChunk, worker: str | None = None) -> None:
        """A chunk of choice `index` arrived from the engine."""
        if self._ttft is None and (chunk.text or chunk.num_new_tokens or chunk.token_ids):
            self._ttft = time.monotonic() - self._start
        self._generated[index] = max(self._generated.get(index, 0), chunk.completion_tokens)
        if worker is not None:
            self.worker = worker
        if chunk.model_revision is not None:
            self.model_revision = chunk.model_revision

    def on_delivered(self, index: int, completion_tokens: int) -> None:
        """Choice `index`'s chunks up to `completion_tokens` were handed to the client."""
        self._delivered[index] = max(self._delivered.get(index, 0), completion_tokens)

    def set_usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens, self.completion_tokens, self.cached_tokens = prompt_tokens, completion_tokens, cached_tokens

    def set_outputs(self, texts: list[str], finish_reasons: list[str | None]) -> None:
        self.finish_reasons = finish_reasons
        if self.keep_content:
            self.outputs = texts

    def delivered_all(self) -> None:
        """A whole (non-streamed) answer was handed over: every generated token was delivered."""
        self._delivered = dict(self._generated) or {0: self.completion_tokens}

    def freeze(self, status: int, state: dict[str, Any]) -> RequestOutcome:
        principal = state.get("principal")
        generated = sum(self._generated.values()) or (self.completion_tokens if status == 200 else 0)
        return RequestOutcome(
            record_id=self.record_id,
            request_id=self.request_id,
            method=self.method,
            endpoint=self.endpoint,
            started_at=self.started_at,
            tenant=getattr(principal, "tenant", None),
            key_prefix=getattr(principal, "key_prefix", None),
            model=self.model,
            worker=self.worker,
            model_revision=self.model_revision,
            status=status,
            error_code=state.get("error_code"),
            stream=self.stream,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            generated_tokens=generated,
            delivered_tokens=sum(self._delivered.values()),
            client_disconnected=status == 499,
            latency_s=time.monotonic() - self._start,
            ttft_s=self._ttft,
            finish_reasons=self.finish_reasons,
            filter_actions=list(state.get("filter_actions") or []),
            request=self.request,
            outputs=self.outputs,
        )

    async def finish(self, status: int, state: dict[str, Any]) -> RequestOutcome:
        """Freeze the record and tell the listeners, the first time only."""
        if self.outcome is None:
            self.outcome = self.freeze(status, state)
            if self._listeners is not None:
                await self._listeners.notify(self.outcome)
            await call_all(self._hooks, self.outcome)
        return self.outcome


class OutcomeListeners:
    """Who hears of each finished request, in the order they were added."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.keep_content = False  # set by a listener that stores the exchange (conversation logs)

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def notify(self, outcome: RequestOutcome) -> None:
        await call_all(self._listeners, outcome)


async def call_all(listeners: list[Listener], outcome: RequestOutcome) -> None:
    """Each listener in turn; one that fails is logged and the rest still run."""
    for listener in listeners:
        try:
            result = listener(outcome)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("outcome listener %r failed for %s", listener, outcome.request_id)


def tracker_of(state: object) -> RequestTracker:
    """The request's tracker; a detached one (no listeners) where no middleware opened one (unit tests)."""
    tracker = getattr(state, "outcome", None)
    return tracker if isinstance(tracker, RequestTracker) else RequestTracker("detached", "POST", "", None)


class OutcomeMiddleware:
    """Opens a tracker for every /v1 request and finishes it exactly once (see the module docstring)."""

    def __init__(self, app: ASGIApp, listeners: Callable[[], OutcomeListeners | None]) -> None:
        self.app = app
        self._listeners = listeners

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = str(state.get("request_id") or f"req-{uuid.uuid4().hex}")
        tracker = RequestTracker(request_id, scope["method"], scope["path"], self._listeners())
        state["outcome"] = tracker
        status = 500

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                with anyio.CancelScope(shield=True):
                    await tracker.finish(status, state)
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            status = 500
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await tracker.finish(status if status != 200 or tracker.outcome else 499, state)
