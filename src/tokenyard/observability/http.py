"""ASGI middleware that keeps the gauge of the gateway's open server-sent-event streams."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenyard.observability.gateway import GatewayMetrics


class OpenStreamsMiddleware:
    """Counts a response as an open stream from its `text/event-stream` start until it ends."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], GatewayMetrics]) -> None:
        self.app = app
        self.metrics = metrics  # called per request: the app's metrics exist once the app does

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        streaming = False
        gauge = self.metrics().open_streams

        async def watch(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                streaming = content_type.startswith(b"text/event-stream")
                if streaming:
                    gauge.inc()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if streaming:
                gauge.dec()
