"""Puts the request's `Principal` on `request.state.principal` (auth off: the default tenant).

With auth on, tokenyard.gateway.auth replaces this layer; the rest of the gateway reads the
principal the same way in both cases.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.governance.principal import Principal


class DefaultPrincipalMiddleware:
    """Every request acts as one fixed principal (the default tenant while auth is off)."""

    def __init__(self, app: ASGIApp, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = self.principal
        await self.app(scope, receive, send)
