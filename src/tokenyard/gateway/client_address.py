"""Who is calling: the client's address (X-Forwarded-For believed only from trusted proxies),
checked against the IP allow-lists of the service, the tenant and the key (403 when outside).

The address is read from the right of X-Forwarded-For: each trusted proxy appends the address it
received from, so the first address from the right that is not a trusted proxy is the client's.
Anything left of it was written by the client and is ignored. `/health` and `/ready` stay open to
every address so that probes and load balancers work.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.errors import AddressNotAllowedError
from tokenyard.gateway.auth import is_api_path
from tokenyard.governance.networks import Address, Network, contains, parse_address, parse_network
from tokenyard.governance.principal import Principal
from tokenyard.web import error_response

PUBLIC_PATHS = frozenset({"/health", "/ready"})


def forwarded_for(scope: Scope) -> list[str]:
    """Every address in every X-Forwarded-For header, in order."""
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-forwarded-for"]
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def client_address(scope: Scope, trusted: Sequence[Network]) -> Address | None:
    client = scope.get("client")
    peer = parse_address(client[0]) if client else None
    if peer is None or not contains(trusted, peer):
        return peer
    for hop in reversed(forwarded_for(scope)):
        address = parse_address(hop)
        if address is None:
            return peer  # a garbled hop: trust nothing beyond the proxy itself
        if not contains(trusted, address):
            return address
    return peer


def refuse(address: Address | None, whose: str) -> AddressNotAllowedError:
    shown = str(address) if address is not None else "unknown"
    return AddressNotAllowedError(f"Requests from {shown} are not allowed by the {whose} IP allow-list.")


class ClientAddressMiddleware:
    """Resolves the client's address onto `request.state.client_ip`; applies the global allow-list."""

    def __init__(self, app: ASGIApp, allowlist: Sequence[str], trusted_proxies: Sequence[str]) -> None:
        self.app = app
        self._allowed = [parse_network(n) for n in allowlist]
        self._trusted = [parse_network(n) for n in trusted_proxies]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = client_address(scope, self._trusted)
        scope.setdefault("state", {})["client_ip"] = str(address) if address is not None else None
        outside = address is None or not contains(self._allowed, address)
        if self._allowed and scope["path"] not in PUBLIC_PATHS and outside:
            await error_response(refuse(address, "service's"))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def principal_allows(principal: Principal, address: Address | None) -> str | None:
    """None if the tenant's and the key's lists (where set) both allow `address`, else whose list refuses."""
    for whose, networks in (("tenant's", principal.tenant_networks), ("key's", principal.key_networks)):
        if networks and (address is None or not contains([parse_network(n) for n in networks], address)):
            return whose
    return None


class PrincipalNetworksMiddleware:
    """After auth: the tenant's and the key's own allow-lists (403 when outside either)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {})
        principal = state.get("principal")
        if scope["type"] == "http" and is_api_path(scope["path"]) and isinstance(principal, Principal):
            address = parse_address(state["client_ip"]) if state.get("client_ip") else None
            whose = principal_allows(principal, address)
            if whose is not None:
                await error_response(refuse(address, whose))(scope, receive, send)
                return
        await self.app(scope, receive, send)
