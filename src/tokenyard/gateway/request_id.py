"""X-Request-ID on every response, and on `request.state.request_id` for every layer below.

A client's own id is kept when it is short and printable ASCII, so that it can be searched for in
logs; anything else (too long, control characters, non-ASCII) is replaced by a fresh one rather
than echoed, which would let a client inject text into headers or log lines.
"""

from __future__ import annotations

import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
MAX_LENGTH = 128


def accept_request_id(value: str | None) -> str:
    """The client's id if it is acceptable, else a new one."""
    if value and len(value) <= MAX_LENGTH and all(0x21 <= ord(ch) <= 0x7E for ch in value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Outermost middleware: every response, error or not, carries the request's id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, raw in scope["headers"]:
            if name == HEADER.encode():
                sent = raw.decode("latin-1")
                break
        request_id = accept_request_id(sent)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
