"""The gateway's aiohttp session for internal calls whose answer is read whole (its embedding calls).

Why not the shared httpx client: httpcore's pool walks every pooled connection twice per request and
polls each idle one's socket, and httpx's client layer reads and writes a cookie jar on every response;
together about 40 % of the gateway's CPU for an embedding call at concurrency 16 (docs/engine.md,
"Where a /v1/embeddings call's time goes"). aiohttp's pool hands out a connection with a pop and learns
of closes from the event loop, and its HTTP parser is written in C.

What it keeps from the httpx client: the same default headers and request hooks (a hook reads and
sets `request.headers`, which httpx's and aiohttp's requests both have), the proxies the environment
names, and the same limit on connections.

aiohttp sends a request again when its pooled connection turns out closed by the server (the server's
keep-alive timeout raced it) only for idempotent methods; an embedding call is a POST that is safe to
repeat, so `post_whole` sends it again once. The second try finds no connection the event loop has
seen closed: aiohttp's pool drops those when handing one out.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

KEEPALIVE_SECONDS = 5.0  # an idle connection is reused for this long; the workers keep theirs 30 s
MAX_CONNECTIONS = 1000  # the shared httpx client's max_connections: more calls at once wait for a turn
JSON_BODY = {"content-type": "application/json"}

RequestHook = Callable[[Any], Awaitable[None]]  # given the request; may set its headers


@dataclass(frozen=True)
class WholeAnswer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def open_session(headers: Mapping[str, str], request_hooks: Sequence[RequestHook] = ()) -> aiohttp.ClientSession:
    """A session sending `headers` on every call and running `request_hooks` on each request first.

    Create it inside the event loop that uses it (the gateway's lifespan); close it there too."""
    hooks = list(request_hooks)

    async def run_hooks(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        for hook in hooks:
            await hook(request)
        return await handler(request)

    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS)
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        middlewares=(run_hooks,) if hooks else (),
        cookie_jar=aiohttp.DummyCookieJar(),  # internal services set no cookies worth keeping
        # HTTP_PROXY and NO_PROXY, as httpx honours them; only when a proxy is named, as aiohttp then looks
        # up the proxy and ~/.netrc in a thread on every request (docs/benchmarks.md, 22:01–22:23 UTC).
        trust_env=bool(urllib.request.getproxies()),
    )


async def post_whole(
    session: aiohttp.ClientSession, url: str, body: bytes, timeout: aiohttp.ClientTimeout
) -> WholeAnswer:
    """POST a JSON body and read the whole answer; raises aiohttp.ClientError (timeouts included)."""
    try:
        return await _post(session, url, body, timeout)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if isinstance(exc, aiohttp.ClientConnectorError):  # nothing was sent: a refused connect is final
            raise
    return await _post(session, url, body, timeout)  # once more: the connection closed under the request


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, timeout: aiohttp.ClientTimeout) -> WholeAnswer:
    async with session.post(url, data=body, headers=JSON_BODY, timeout=timeout) as response:
        return WholeAnswer(response.status, response.headers, await response.read())
