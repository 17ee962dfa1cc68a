"""Authentication layers of the gateway: tenant keys on /v1, the admin key on /admin.

Each is a small ASGI middleware in the gateway's one ordered list (gateway/app.py). A refused
request gets OpenAI's error shape (401, or 503 while keys cannot be verified); an accepted /v1
request carries its `Principal` on `request.state.principal`. Keys are read from
`Authorization: Bearer KEY` only, never from a query string (which would end up in access logs).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.errors import AuthenticationError, TokenyardError
from tokenyard.governance.verifier import KeyVerifier
from tokenyard.web import error_response, openai_error

MAX_KEY_LENGTH = 512  # longer headers are refused before any hashing


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


class KeyAuthMiddleware:
    """Every /v1 request needs a tenant's key; its principal goes on request.state."""

    def __init__(self, app: ASGIApp, verifier: Callable[[], KeyVerifier]) -> None:
        self.app = app
        self._verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = bearer_token(scope)
        try:
            if key is None:
                raise AuthenticationError(
                    "You didn't provide an API key. Send it in the Authorization header: 'Bearer YOUR_KEY'."
                )
            if len(key) > MAX_KEY_LENGTH:
                raise AuthenticationError("Incorrect API key provided.")
            principal = await self._verifier().verify(key)
        except TokenyardError as error:
            await error_response(error)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class AdminAuthMiddleware:
    """/admin/... needs the admin key (TOKENYARD_ADMIN_KEY), compared in constant time.

    Guarding the whole prefix here, rather than route by route, means an /admin route added later
    cannot be left open by mistake.
    """

    PREFIX = "/admin"

    def __init__(self, app: ASGIApp, admin_key: str | None) -> None:
        self.app = app
        self._key = admin_key.encode() if admin_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.PREFIX or path.startswith(self.PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if self._key is None:
            response = openai_error(403, "The admin API is closed: set TOKENYARD_ADMIN_KEY.", code="admin_disabled")
            await response(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None or not secrets.compare_digest(token.encode("utf-8", "replace"), self._key):
            await error_response(AuthenticationError("This endpoint needs the admin key."))(scope, receive, send)
            return
        await self.app(scope, receive, send)
