"""Where the OpenAI API is: the controller's answer to requests meant for a gateway.

FastChat users test a cluster with `curl http://localhost:21001/v1/chat/completions`, the
controller's port. Rather than a bare 404, the controller answers every `/v1/...` path with an
OpenAI-shaped error naming the gateways that have called it recently (each gateway says where it
listens in a header on its control-plane calls), or the default gateway port when none has.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.web import GATEWAY_HEADER, openai_error

SEEN_SECONDS = 60.0  # a gateway silent for longer is no longer named
MAX_GATEWAYS = 16  # bounds the table against a peer that invents addresses
DEFAULT_GATEWAY_PORT = 8000


class GatewaySightings:
    """Gateway URLs with the time each was last heard from; injectable clock for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last_seen: dict[str, float] = {}

    def saw(self, announced: str, peer: str | None) -> None:
        url = _reachable_url(announced, peer)
        if url is None:
            return
        self.last_seen[url] = self.clock()
        if len(self.last_seen) > MAX_GATEWAYS:
            del self.last_seen[min(self.last_seen, key=self.last_seen.__getitem__)]

    def recent(self) -> list[str]:
        cutoff = self.clock() - SEEN_SECONDS
        return sorted(url for url, seen in self.last_seen.items() if seen >= cutoff)


def _reachable_url(announced: str, peer: str | None) -> str | None:
    """The gateway's URL as a client could use it: a wildcard or loopback listen address becomes
    the address the call came from (a gateway on 0.0.0.0 does not know its own)."""
    scheme, sep, rest = announced.strip().partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or scheme not in {"http", "https"} or not colon or not port.isdigit() or len(announced) > 200:
        return None
    if peer and (host.strip("[]") in {"0.0.0.0", "::", "", "localhost"} or _is_loopback(host.strip("[]"))):
        host = f"[{peer}]" if _is_ipv6(peer) else peer
    return f"{scheme}://{host}:{port}"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


class GatewaySightingMiddleware:
    """Notes the announced address of each (already authenticated) control-plane caller."""

    def __init__(self, app: ASGIApp, sightings: GatewaySightings) -> None:
        self.app = app
        self.sightings = sightings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                if name == GATEWAY_HEADER.encode():
                    client = scope.get("client")
                    self.sightings.saw(value.decode("latin-1"), client[0] if client else None)
        await self.app(scope, receive, send)


class OpenAIHintMiddleware:
    """Answers `/v1/...` with a 404 in OpenAI's shape that says where the API is.

    It sits outside the cluster-token check: the person who sent the request has no token and
    needs the hint most.
    """

    def __init__(self, app: ASGIApp, sightings: GatewaySightings) -> None:
        self.app = app
        self.sightings = sightings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/v1" and not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        response = openai_error(404, hint_message(path, self.sightings.recent()), code="wrong_service")
        await response(scope, receive, send)


def hint_message(path: str, gateways: list[str]) -> str:
    where = (
        "a gateway this controller has seen: " + ", ".join(f"{url}{path}" for url in gateways)
        if gateways
        else f"the gateway (`tokenyard gateway`, port {DEFAULT_GATEWAY_PORT} by default)"
    )
    return (
        f"This is the tokenyard controller (the worker registry), which does not serve the OpenAI API. "
        f"Send {path} to {where}."
    )
