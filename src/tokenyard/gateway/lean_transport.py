"""A lean HTTP/1.1 client for internal calls whose answer is read whole (the gateway's embedding calls).

httpx's default transport (httpcore's pool) walks every pooled connection twice per request and, for
each idle one, asks its socket whether it is readable: a `getpeername` and a `select` per connection,
per walk. A gateway at concurrency 16 keeps 16 or more connections to one embedding worker, so that
bookkeeping was about a quarter of the gateway's CPU for an embedding request (docs/engine.md, "Where a
/v1/embeddings call's time goes"). Here idle connections wait on a stack per origin (taking one is a
pop), a connection learns that the server closed it from the event loop (`eof_received`), and a whole
request goes out in one write.

What it does not do: stream a response (the body is read whole, by Content-Length, chunks or the
close), HTTP/2, or TLS: anything other than `http://` goes to httpx's own transport. A request that
finds its reused connection closed by the server before any byte of the answer (the server's keep-alive
timeout raced it) is sent again once on a new connection; embedding calls are safe to repeat.

`LeanClient` is the one method of an httpx client those calls use (`post`), over this transport:
httpx's client layer cost another ~15 % of the gateway's CPU per embedding call (a cookie jar read and
written through urllib's cookie machinery on every response, auth and redirect generators, URL
merging), none of which internal calls need. It builds an httpx.Request with its default headers, runs
the request hooks on it as httpx does, and answers an httpx.Response or raises httpx's errors.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import cast

import httpx

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is reused for; servers here keep theirs 30 s
MAX_IDLE_PER_ORIGIN = 100  # the shared client's max_keepalive_connections
MAX_CONNECTIONS = 1000  # the shared client's max_connections: more concurrent calls wait for a turn
Origin = tuple[str, int]


class _Answer:
    """A response: its status and head, then its body."""

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.keep_alive = True


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A socket transport (uvloop's are not asyncio.Transport subclasses, but have the same methods).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _time_out(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(httpx.ReadTimeout("Timed out waiting for the response."))

    async def exchange(self, head_and_body: bytes, read_timeout: float | None) -> _Answer:
        """Send one request, read its whole answer; raises httpx transport errors."""
        assert self.transport is not None
        self._buffer.clear()
        self.transport.write(head_and_body)
        answer = _Answer()
        while True:
            try:
                if _parse(self._buffer, answer, eof=self.closed):
                    return answer
            except (ValueError, IndexError) as exc:
                raise httpx.RemoteProtocolError(f"Malformed response: {exc}") from exc
            if self.closed:
                words = "in the middle of the response" if self._buffer else "without sending a response"
                raise httpx.RemoteProtocolError(f"Server disconnected {words}.")
            self._waiter = self._loop.create_future()
            timer = self._loop.call_later(read_timeout, self._time_out) if read_timeout is not None else None
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    @property
    def received_nothing(self) -> bool:
        return not self._buffer


def _parse(buffer: bytearray, answer: _Answer, *, eof: bool) -> bool:
    """Fill `answer` from `buffer`; True once the response is complete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False
    lines = bytes(buffer[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers = [(name.strip(), value.strip()) for name, _, value in (line.partition(b":") for line in lines[1:])]
    if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
        del buffer[: end + 4]
        return _parse(buffer, answer, eof=eof)
    answer.status, answer.headers = status, headers
    length, chunked = None, False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lowered == b"connection" and value.lower() == b"close":
            answer.keep_alive = False
    start = end + 4
    if chunked:
        body = _dechunk(buffer, start)
        if body is None:
            return False
        answer.body = body
    elif length is not None:
        if len(buffer) - start < length:
            return False
        answer.body = bytes(buffer[start : start + length])
    elif status in (204, 304):
        answer.body = b""
    else:  # delimited by the close
        if not eof:
            return False
        answer.body, answer.keep_alive = bytes(buffer[start:]), False
    return True


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """The body of a chunked message starting at `start`, or None while it is incomplete."""
    parts: list[bytes] = []
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0].strip() or b"0", 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            return b"".join(parts) if trailer_end >= 0 else None
        if len(buffer) < position + size + 2:
            return None
        parts.append(bytes(buffer[position : position + size]))
        position += size + 2


def _wire(request: httpx.Request, body: bytes) -> bytes:
    """The request as bytes on the wire: head and body in one write."""
    if "transfer-encoding" in request.headers:  # a streamed body, read whole: sent as one chunk
        body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    head = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    head += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class LeanTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP keep-alive connections on a stack per origin; others go through `fallback`."""

    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._fallback = fallback if fallback is not None else httpx.AsyncHTTPTransport()
        self._closed = False
        self._turns = asyncio.Semaphore(MAX_CONNECTIONS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or self._closed:
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        wire = _wire(request, await request.aread())
        origin = (url.host, url.port or 80)
        async with self._turns:
            answer = await self._exchange(origin, wire, timeouts)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.body),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def _exchange(self, origin: Origin, wire: bytes, timeouts: dict[str, float | None]) -> _Answer:
        connection = self._take(origin)
        reused = connection is not None
        while True:
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"))
            try:
                answer = await connection.exchange(wire, timeouts.get("read"))
            except httpx.RemoteProtocolError:
                connection.close()
                if reused and connection.received_nothing:
                    connection, reused = None, False  # the server closed it as we sent: again, on a new one
                    continue
                raise
            except BaseException:  # a timeout, or the caller cancelled: the connection's state is unknown
                connection.close()
                raise
            self._give_back(origin, connection, answer.keep_alive)
            return answer

    def _take(self, origin: Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            connection = stack.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_EXPIRY:
                return connection
            connection.close()
        return None

    def _give_back(self, origin: Origin, connection: _Connection, keep_alive: bool) -> None:
        stack = self._idle.setdefault(origin, [])
        if not keep_alive or connection.closed or self._closed or len(stack) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        stack.append(connection)

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _transport, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), origin[0], origin[1]), timeout
            )
        except asyncio.TimeoutError as exc:
            raise httpx.ConnectTimeout(f"Timed out connecting to {origin[0]}:{origin[1]}.") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return connection

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()
        await self._fallback.aclose()


RequestHook = Callable[[httpx.Request], Awaitable[None]]


class LeanClient:
    """`post` to internal services over a LeanTransport, with default headers and request hooks.

    When the environment names a proxy, calls go through a plain httpx client, which honours it."""

    def __init__(self, headers: Mapping[str, str], request_hooks: Sequence[RequestHook] = ()) -> None:
        self._headers = httpx.Headers(headers)
        self._hooks = list(request_hooks)
        self._transport = LeanTransport()
        proxied = bool(urllib.request.getproxies())
        self._proxied = httpx.AsyncClient(headers=headers, event_hooks={"request": self._hooks}) if proxied else None

    async def post(self, url: str, *, content: str | bytes, timeout: httpx.Timeout) -> httpx.Response:
        if self._proxied is not None:
            return await self._proxied.post(url, content=content, timeout=timeout)
        request = httpx.Request(
            "POST", url, headers=self._headers, content=content, extensions={"timeout": timeout.as_dict()}
        )
        for hook in self._hooks:
            await hook(request)
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's client does
            raise
        await response.aread()
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
        if self._proxied is not None:
            await self._proxied.aclose()

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
