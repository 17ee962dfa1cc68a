"""The embedding calls' aiohttp session, against a small raw HTTP/1.1 server whose closes each test chooses.

The server answers every request with `answer(request_head, body)`'s bytes (nothing: no answer); it
records how many connections it accepted, so reuse is observable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import httpx
import pytest

from tokenyard.errors import UpstreamError, WorkerError
from tokenyard.gateway.whole_answers import open_session, post_whole
from tokenyard.gateway.worker_client import WorkerClient
from tokenyard.protocol.internal import EmbedRequest

Answer = Callable[[bytes, bytes], bytes]
TIMEOUT = aiohttp.ClientTimeout(sock_connect=5.0, sock_read=5.0)


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


async def test_sequential_calls_share_one_connection_and_bodies_round_trip() -> None:
    server = RawServer(echo)
    async with serving(server) as url, open_session({}) as session:
        for i in range(5):
            answer = await post_whole(session, f"{url}/embed", b'{"n": %d}' % i, TIMEOUT)
            assert answer.status == 200 and json.loads(answer.body) == {"n": i}
    assert server.connections == 1


async def test_concurrent_calls_each_get_their_own_answer() -> None:
    server = RawServer(echo)
    async with serving(server) as url, open_session({}) as session:
        bodies = [b"x" * i + b"|%d" % i for i in range(1, 40)]
        answers = await asyncio.gather(*(post_whole(session, f"{url}/embed", b, TIMEOUT) for b in bodies))
        assert [a.body for a in answers] == bodies
        again = await asyncio.gather(*(post_whole(session, f"{url}/embed", b, TIMEOUT) for b in bodies))
        assert [a.body for a in again] == bodies
    assert server.connections <= len(bodies)  # the second wave reused the first wave's connections


async def test_headers_and_request_hooks_reach_the_server() -> None:
    server = RawServer(echo)
    seen: list[str] = []

    async def tag(request: aiohttp.ClientRequest) -> None:  # as forward_request_id does to an httpx.Request
        seen.append(request.headers["x-token"])
        if "x-request-id" not in request.headers:
            request.headers["x-request-id"] = "req-9"

    async with serving(server) as url, open_session({"x-token": "t"}, [tag]) as session:
        await post_whole(session, f"{url}/embed?a=1", b"{}", TIMEOUT)
    head = server.heads[0].lower()
    assert head.startswith(b"post /embed?a=1 http/1.1\r\n")
    assert b"\r\nx-token: t\r\n" in head and b"\r\nx-request-id: req-9\r\n" in head
    assert b"\r\ncontent-type: application/json\r\n" in head and b"\r\nhost: 127.0.0.1:" in head
    assert seen == ["t"]  # the default headers are on the request before the hooks run


async def test_a_connection_the_server_closed_is_replaced_without_an_error() -> None:
    server = RawServer(echo, close_after=1)  # every connection serves one request, then closes
    async with serving(server) as url, open_session({}) as session:
        for i in range(3):
            await asyncio.sleep(0.01)  # the close reaches the client's event loop
            assert (await post_whole(session, f"{url}/embed", b"%d" % i, TIMEOUT)).body == b"%d" % i
    assert server.connections == 3


async def test_a_close_racing_the_request_is_sent_again_once() -> None:
    # The server reads the second request on a connection and closes without answering, as a server
    # whose keep-alive timeout fires while the request is on its way would.
    answered = 0

    def first_only(head: bytes, body: bytes) -> bytes:
        nonlocal answered
        answered += 1
        return sized(body) if answered != 2 else b""

    server = RawServer(first_only, close_after=2)
    async with serving(server) as url, open_session({}) as session:
        assert (await post_whole(session, f"{url}/embed", b"one", TIMEOUT)).body == b"one"
        assert (await post_whole(session, f"{url}/embed", b"two", TIMEOUT)).body == b"two"
    assert server.connections == 2


async def test_a_server_that_always_closes_is_tried_twice_then_reported() -> None:
    server = RawServer(lambda head, body: b"", close_after=1)
    async with serving(server) as url, open_session({}) as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post_whole(session, f"{url}/embed", b"{}", TIMEOUT)
    assert server.connections == 2


async def test_the_session_goes_through_a_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = RawServer(echo)
    async with serving(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with open_session({}) as session:
            answer = await post_whole(session, "http://worker.internal:8001/embed", b"{}", TIMEOUT)
    assert answer.body == b"{}"
    assert proxy.heads[0].lower().startswith(b"post http://worker.internal:8001/embed http/1.1")


@asynccontextmanager
async def worker_client(stall_timeout: float = 5.0) -> AsyncIterator[WorkerClient]:
    async with httpx.AsyncClient() as client, open_session({}) as session:
        yield WorkerClient(client, 10.0, stall_timeout, session)


EMBED = EmbedRequest(request_id="r", model="m", texts=["hi"])


async def test_embed_reads_the_workers_answer() -> None:
    reply = b'{"embeddings": [[0.5, -1.0]], "prompt_tokens": 2}'
    server = RawServer(lambda head, body: sized(reply) if json.loads(body)["texts"] == ["hi"] else b"")
    async with serving(server) as url, worker_client() as workers:
        answer = await workers.embed(url, EMBED)
    assert answer.embeddings == [[0.5, -1.0]] and answer.prompt_tokens == 2


async def test_embed_raises_the_workers_error_with_its_retry_after() -> None:
    body = b'{"error": {"message": "busy", "type": "server_error", "code": "overloaded"}}'
    server = RawServer(lambda head, _b: sized(body, "503 Service Unavailable", b"retry-after: 7\r\n"))
    async with serving(server) as url, worker_client() as workers:
        with pytest.raises(UpstreamError) as refused:
            await workers.embed(url, EMBED)
    assert refused.value.status_code == 503 and refused.value.retry_after == 7.0
    assert refused.value.message == "busy" and refused.value.code == "overloaded"

    garbled = RawServer(lambda head, _b: sized(b"<html>oops</html>", "502 Bad Gateway"))
    async with serving(garbled) as url, worker_client() as workers:
        with pytest.raises(WorkerError, match="HTTP 502"):
            await workers.embed(url, EMBED)


async def test_embed_transport_failures_are_worker_errors() -> None:
    async with serving(RawServer(echo)) as url:
        pass  # the port is free again
    async with worker_client() as workers:
        with pytest.raises(WorkerError, match="Could not reach worker"):
            await workers.embed(url, EMBED)

    never = RawServer(lambda head, body: b"")
    async with serving(never) as url, worker_client(stall_timeout=0.2) as workers:
        with pytest.raises(WorkerError, match="Could not reach worker"):
            await workers.embed(url, EMBED)

    cut = RawServer(lambda head, body: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", close_after=1)
    async with serving(cut) as url, worker_client() as workers:
        with pytest.raises(WorkerError, match="Could not reach worker"):
            await workers.embed(url, EMBED)
