"""Puts the request's `Principal` on `request.state.principal` (auth off: the default tenant).

With auth on, tokenyard.gateway.auth replaces this layer; the rest of the gateway reads the
principal the same way in both cases.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.errors import ModelNotFoundError
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


def principal_of(request: Request) -> Principal:
    """The principal an earlier layer put on the request (KeyAuth or DefaultPrincipal)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise RuntimeError("no principal on a /v1 request: the auth layer is missing from the middleware list")
    return principal


def require_model(request: Request, model: str) -> Principal:
    """The principal, if it may use `model`; a model it may not use does not exist for it (404)."""
    principal = principal_of(request)
    if not principal.may_use(model):
        raise ModelNotFoundError(model)
    return principal


def tenant_of(state: object) -> str | None:
    """The tenant of the request whose `request.state` this is (None outside the middleware chain:
    unit tests of the serving code)."""
    principal = getattr(state, "principal", None)
    return principal.tenant if isinstance(principal, Principal) else None
