"""Pieces every tokenyard HTTP service shares: error responses, control-plane auth, the server runner.

Errors leave every service in OpenAI's `{"error": {...}}` shape from one set of handlers; typed
core errors, request validation failures and malformed JSON all map to a 4xx here, so a bad
request never becomes a 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.errors import TokenyardError

logger = logging.getLogger(__name__)

CLUSTER_TOKEN_HEADER = "x-tokenyard-cluster-token"
GATEWAY_HEADER = "x-tokenyard-gateway"  # a gateway's own URL, on its calls to the controller
# Seconds a server keeps an idle connection open: longer than httpx clients (ours, and the OpenAI SDK)
# keep one in their pool (httpx's default keepalive_expiry, 5 s). Were both 5 s, as are uvicorn's and
# httpx's defaults, a client could send a request on a pooled connection just as the server, its event
# loop busy with other streams, closes it; the request then fails with a reset connection.
KEEP_ALIVE_SECONDS = 30


def error_response(error: TokenyardError) -> JSONResponse:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=headers)


async def send_error(error: TokenyardError, scope: Scope, receive: Receive, send: Send) -> None:
    """A middleware's refusal: the error response, with its code kept on the request's state for the
    outcome record (the metrics count 429s by it: rate limit, quota, saturation)."""
    scope.setdefault("state", {})["error_code"] = error.code
    await error_response(error)(scope, receive, send)


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    error_type = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _is_union_tag(part: str) -> bool:
    """Pydantic names the union member it tried in `loc` ('str', 'list[int]', 'TextContentPart');
    those are types, not parameters, so they stay out of the `param` a client sees."""
    return "[" in part or part in {"str", "int", "float", "bool", "none", "dict", "list"} or part[:1].isupper()


def _param_path(loc: tuple[int | str, ...]) -> list[str]:
    return [str(part) for part in loc if part != "body" and not (isinstance(part, str) and _is_union_tag(part))]


def _most_specific(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the first field's errors, the deepest: for a union such as `content: str | list[part]`
    that is the member the client evidently meant (a list whose part is wrong), not 'not a string'."""
    field = _param_path(errors[0].get("loc", ()))[:1]
    same_field = [e for e in errors if _param_path(e.get("loc", ()))[:1] == field]
    return max(same_field, key=lambda e: len(_param_path(e.get("loc", ()))))


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable sentence and the offending parameter's dotted path, from pydantic's error list."""
    errors = list(exc.errors())
    if not errors:
        return "Invalid request body.", None
    first = _most_specific(errors)
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request: it is not valid JSON.", None
    param = ".".join(_param_path(first.get("loc", ()))) or None
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "value_error" and "error" in first.get("ctx", {}):
        message = str(first["ctx"]["error"])  # our validator's own words, without "Value error, "
    if param is None:
        return f"Invalid request body: {message}.", None
    return f"Invalid value for '{param}': {message}.", param


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through OpenAI's error shape, with the status OpenAI would use."""

    @app.exception_handler(TokenyardError)
    async def _typed(request: Request, exc: TokenyardError) -> JSONResponse:
        request.state.error_code = exc.code  # for the metrics (429s by reason)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(exc)
        return openai_error(400, message, param=param, code="invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return openai_error(exc.status_code, str(exc.detail), code=code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return openai_error(500, "The server had an error while processing your request.", code="internal_error")


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body iterator, even when the client went away.

    Starlette cancels the sending task on disconnect while the body generator sits at a `yield`,
    so the generator's own clean-up (closing upstream streams, aborting generation) would wait
    for garbage collection. Closing it here, shielded from the cancellation, makes it immediate.
    """

    def __init__(self, content: Any, *, media_type: str | None = None, **kwargs: Any) -> None:
        super().__init__(content, media_type=media_type, **kwargs)
        if media_type == "text/event-stream":
            # Tells nginx (and proxies that honour it) not to buffer the events; the shipped
            # deploy/nginx config turns buffering off as well, for proxies that ignore this header.
            self.headers.setdefault("x-accel-buffering", "no")
            self.headers.setdefault("cache-control", "no-cache")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


class AssumeJSONBodyMiddleware:
    """Reads POST bodies as JSON whatever their Content-Type says.

    `curl -d '{...}'` labels JSON as a form unless told otherwise; the API only takes JSON, so
    the label is corrected rather than answering a confusing validation error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ClusterAuthMiddleware:
    """Guards the control plane (controller and workers).

    With a cluster token, every request but the public probes must carry it; without one, only
    loopback peers are served, so a single-host deployment needs no configuration and is not exposed.
    """

    # /metrics guards itself: public by default, behind the admin key with metrics.require_auth.
    PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.PUBLIC_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        reason = "a valid cluster token" if self.token else "a loopback address (no cluster token is set)"
        response = openai_error(403, f"This control-plane endpoint requires {reason}.", code="forbidden")
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if self.token is None:
            client = scope.get("client")
            return _is_loopback(client[0] if client else None)
        for name, value in scope.get("headers", []):
            if name.decode("latin-1") == CLUSTER_TOKEN_HEADER:
                return secrets.compare_digest(value.decode("latin-1"), self.token)
        return False


def cluster_headers(token: str | None) -> dict[str, str]:
    """Headers every internal client sends: JSON bodies, and the token the peer's
    ClusterAuthMiddleware asks for."""
    headers = {"content-type": "application/json"}
    if token:
        headers[CLUSTER_TOKEN_HEADER] = token
    return headers


class GracefulServer(uvicorn.Server):
    """A uvicorn server that runs a hook the moment SIGTERM/SIGINT arrives, before connections close.

    Workers use the hook to stop taking work and leave the controller's registry first, then uvicorn
    lets in-flight requests finish (bounded by `timeout_graceful_shutdown`).
    """

    def __init__(self, config: uvicorn.Config, on_exit_signal: Callable[[], Awaitable[None]] | None = None):
        super().__init__(config)
        self._on_exit_signal = on_exit_signal
        self._hook_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._on_exit_signal is not None and not self._hook_started:
            self._hook_started = True
            task = asyncio.get_event_loop().create_task(self._run_hook())
            task.add_done_callback(lambda _t: super(GracefulServer, self).handle_exit(sig, frame))
            return
        super().handle_exit(sig, frame)

    async def _run_hook(self) -> None:
        assert self._on_exit_signal is not None
        try:
            await self._on_exit_signal()
        except Exception:
            logger.exception("shutdown hook failed")


def serve_app(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    on_exit_signal: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float | None = None,
) -> None:
    """Run one app until a signal stops it."""
    GracefulServer(server_config(app, host, port, graceful_timeout), on_exit_signal).run()


def server_config(app: ASGIApp, host: str, port: int, graceful_timeout: float | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=int(graceful_timeout) if graceful_timeout is not None else None,
        lifespan="on",
    )
