"""LeanTransport against a small raw HTTP/1.1 server whose framing and closes each test chooses.

The server answers every request with `answer(request_head, body)`'s bytes; it records how many
connections it accepted, so reuse is observable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from tokenyard.gateway import lean_transport
from tokenyard.gateway.lean_transport import LeanClient, LeanTransport

Answer = Callable[[bytes, bytes], bytes]


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n%s" % (status.encode(), len(body), extra, body)


def echo(head: bytes, body: bytes) -> bytes:
    return sized(body)


@dataclass
class RawServer:
    answer: Answer
    close_after: int | None = None  # requests per connection before the server closes it
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
                body = await reader.readexactly(length)
                self.heads.append(head)
                reply = self.answer(head, body)
                if reply:
                    writer.write(reply)
                    await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(server: RawServer) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), timeout=5.0, **kwargs)  # type: ignore[arg-type]


async def test_sequential_calls_share_one_connection_and_bodies_round_trip() -> None:
    server = RawServer(echo)
    async with serving(server) as url, client() as http:
        for i in range(5):
            response = await http.post(f"{url}/embed", content=b'{"n": %d}' % i)
            assert response.status_code == 200
            assert response.json() == {"n": i}
    assert server.connections == 1


async def test_concurrent_calls_each_get_their_own_answer() -> None:
    server = RawServer(echo)
    async with serving(server) as url, client() as http:
        bodies = [b"x" * i + b"|%d" % i for i in range(1, 40)]
        responses = await asyncio.gather(*(http.post(f"{url}/embed", content=b) for b in bodies))
        assert [r.content for r in responses] == bodies
        again = await asyncio.gather(*(http.post(f"{url}/embed", content=b) for b in bodies))
        assert [r.content for r in again] == bodies
    assert server.connections <= len(bodies)  # the second wave reused the first wave's connections


async def test_headers_and_request_hooks_reach_the_server() -> None:
    server = RawServer(echo)

    async def tag(request: httpx.Request) -> None:
        request.headers["x-request-id"] = "req-9"

    async with serving(server) as url, client(headers={"x-token": "t"}, event_hooks={"request": [tag]}) as http:
        await http.post(f"{url}/embed?a=1", content=b"{}")
    head = server.heads[0].lower()
    assert head.startswith(b"post /embed?a=1 http/1.1\r\n")
    assert b"\r\nx-token: t\r\n" in head and b"\r\nx-request-id: req-9\r\n" in head
    assert b"\r\ncontent-length: 2\r\n" in head and b"\r\nhost: 127.0.0.1:" in head


async def test_chunked_and_close_delimited_bodies() -> None:
    def chunked(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n"

    server = RawServer(chunked)
    async with serving(server) as url, client() as http:
        assert (await http.post(f"{url}/x", content=b"")).content == b"abcdefg"
        assert (await http.post(f"{url}/x", content=b"")).content == b"abcdefg"
    assert server.connections == 1

    until_close = RawServer(lambda head, body: b"HTTP/1.1 200 OK\r\n\r\nall of it", close_after=1)
    async with serving(until_close) as url, client() as http:
        assert (await http.post(f"{url}/x", content=b"")).content == b"all of it"
        assert (await http.post(f"{url}/x", content=b"")).content == b"all of it"
    assert until_close.connections == 2


async def test_error_status_and_its_headers_come_back() -> None:
    body = b'{"error": {"message": "busy"}}'
    server = RawServer(lambda head, _b: sized(body, "503 Service Unavailable", b"retry-after: 7\r\n"))
    async with serving(server) as url, client() as http:
        response = await http.post(f"{url}/embed", content=b"{}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json() == {"error": {"message": "busy"}}


async def test_a_connection_the_server_closed_is_replaced_without_an_error() -> None:
    server = RawServer(echo, close_after=1)  # every connection serves one request, then closes
    async with serving(server) as url, client() as http:
        for i in range(3):
            assert (await http.post(f"{url}/embed", content=b"%d" % i)).content == b"%d" % i
    assert server.connections == 3


async def test_a_close_racing_the_request_is_retried_once_on_a_new_connection() -> None:
    # The server reads the second request on a connection and closes without answering, as a server
    # whose keep-alive timeout fires while the request is on its way would.
    answered = 0

    def first_only(head: bytes, body: bytes) -> bytes:
        nonlocal answered
        answered += 1
        return sized(body) if answered != 2 else b""

    server = RawServer(first_only, close_after=2)
    async with serving(server) as url, client() as http:
        assert (await http.post(f"{url}/embed", content=b"one")).content == b"one"
        assert (await http.post(f"{url}/embed", content=b"two")).content == b"two"
    assert server.connections == 2


async def test_an_idle_connection_past_its_expiry_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_transport, "KEEPALIVE_EXPIRY", 0.0)
    server = RawServer(echo)
    async with serving(server) as url, client() as http:
        await http.post(f"{url}/embed", content=b"a")
        await http.post(f"{url}/embed", content=b"b")
    assert server.connections == 2


async def test_transport_failures_are_httpx_errors() -> None:
    async with serving(RawServer(echo)) as url:
        pass  # the port is free again
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(f"{url}/embed", content=b"{}")

    never = RawServer(lambda head, body: b"")
    async with serving(never) as url, client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{url}/embed", content=b"{}", timeout=httpx.Timeout(5.0, read=0.2))

    gone = RawServer(lambda head, body: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", close_after=1)
    async with serving(gone) as url, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"{url}/embed", content=b"{}")


async def test_https_goes_to_the_fallback_transport() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=b"ok")

    transport = LeanTransport(fallback=httpx.MockTransport(handle))
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.post("https://worker/embed", content=b"{}")).content == b"ok"
    assert seen == ["https://worker/embed"]


async def test_lean_client_posts_with_its_headers_and_hooks() -> None:
    server = RawServer(echo)

    async def tag(request: httpx.Request) -> None:
        request.headers["x-request-id"] = "req-3"

    async with serving(server) as url, LeanClient({"x-token": "t"}, [tag]) as lean:
        response = await lean.post(f"{url}/embed", content='{"a": 1}', timeout=httpx.Timeout(5.0))
        again = await lean.post(f"{url}/embed", content=b"{}", timeout=httpx.Timeout(5.0))
    assert response.status_code == 200 and response.json() == {"a": 1} and again.content == b"{}"
    head = server.heads[0].lower()
    assert b"\r\nx-token: t\r\n" in head and b"\r\nx-request-id: req-3\r\n" in head
    assert server.connections == 1


async def test_lean_client_errors_name_their_request() -> None:
    async with serving(RawServer(echo)) as url:
        pass  # the port is free again
    async with LeanClient({}) as lean:
        with pytest.raises(httpx.ConnectError) as refused:
            await lean.post(f"{url}/embed", content=b"{}", timeout=httpx.Timeout(5.0))
    assert str(refused.value.request.url) == f"{url}/embed"


async def test_lean_client_goes_through_a_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = RawServer(echo)
    async with serving(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with LeanClient({}) as lean:
            response = await lean.post("http://worker.internal:8001/embed", content=b"{}", timeout=httpx.Timeout(5.0))
    assert response.content == b"{}"
    assert proxy.heads[0].lower().startswith(b"post http://worker.internal:8001/embed http/1.1")
