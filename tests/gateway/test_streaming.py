"""Stream merging and SSE framing, on hand-made chunk streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tokenyard.errors import WorkerError
from tokenyard.gateway.streaming import merge_streams, sse, sse_error
from tokenyard.protocol.internal import GenerateChunk


class FakeStream:
    def __init__(self, texts: list[str], fail: bool = False, delay: float = 0.0) -> None:
        self.texts, self.fail, self.delay, self.closed = texts, fail, delay, False

    async def chunks(self) -> AsyncIterator[GenerateChunk]:
        for i, text in enumerate(self.texts):
            await asyncio.sleep(self.delay)
            yield GenerateChunk(text=text, finish_reason="stop" if i == len(self.texts) - 1 else None)
        if self.fail:
            raise WorkerError("lost the worker")

    async def aclose(self) -> None:
        self.closed = True


async def test_merge_tags_and_interleaves() -> None:
    streams = [FakeStream(["a", "b"], delay=0.01), FakeStream(["x", "y", "z"], delay=0.005)]
    merged = [(i, c.text) async for i, c in merge_streams(streams)]  # type: ignore[arg-type]
    assert [t for i, t in merged if i == 0] == ["a", "b"]
    assert [t for i, t in merged if i == 1] == ["x", "y", "z"]
    assert all(s.closed for s in streams)


async def test_merge_raises_the_first_failure_and_closes_all() -> None:
    streams = [FakeStream(["a"], fail=True), FakeStream(["x"] * 50, delay=0.01)]
    with pytest.raises(WorkerError):
        async for _ in merge_streams(streams):  # type: ignore[arg-type]
            pass
    assert all(s.closed for s in streams)


def test_sse_keeps_chinese_readable() -> None:
    assert sse({"text": "你好"}) == 'data: {"text":"你好"}\n\n'


def test_sse_error_is_openai_shaped_and_hides_internal_errors() -> None:
    typed = json.loads(sse_error(WorkerError("gone"))[len("data: ") :])
    assert typed["error"]["code"] == "worker_error" and typed["error"]["message"] == "gone"
    hidden = json.loads(sse_error(RuntimeError("secret detail"))[len("data: ") :])
    assert "secret" not in hidden["error"]["message"]


async def test_merge_times_out_with_a_typed_error_and_closes_streams() -> None:
    from tokenyard.errors import RequestTimeoutError

    streams = [FakeStream(["a"] * 100, delay=0.05)]
    with pytest.raises(RequestTimeoutError):
        async for _ in merge_streams(streams, timeout=0.2):  # type: ignore[arg-type]
            pass
    assert streams[0].closed


class CancellingStream:
    """A long generation that cancels its reader just after handing it chunk `cancel_at`, before the
    reader has taken it: the moment a client's leaving lands when a fast worker keeps chunks coming."""

    def __init__(self, length: int, cancel_at: int) -> None:
        self.length, self.cancel_at, self.closed = length, cancel_at, False
        self.reader: asyncio.Task[int] | None = None

    async def chunks(self) -> AsyncIterator[GenerateChunk]:
        for n in range(self.length):
            yield GenerateChunk(text="x", finish_reason="length" if n == self.length - 1 else None)
            if n == self.cancel_at and self.reader is not None:
                self.reader.cancel()
            await asyncio.sleep(0)  # the reader takes each chunk before the next comes

    async def aclose(self) -> None:
        self.closed = True


async def test_merge_stops_when_cancelled_while_a_chunk_is_ready() -> None:
    # The client leaving cancels the request's task once (`cancel_on_disconnect`). asyncio.wait_for
    # (before Python 3.12) returned a chunk that was ready when its task was cancelled and dropped the
    # cancellation (CPython gh-86296): the non-streamed request then ran its whole generation.
    stream = CancellingStream(length=1000, cancel_at=10)

    async def read() -> int:
        return len([chunk async for chunk in merge_streams([stream], timeout=60)])  # type: ignore[list-item]

    stream.reader = reader = asyncio.create_task(read())
    done, _ = await asyncio.wait({reader}, timeout=5)
    assert done, "the merge did not end"
    assert reader.cancelled(), f"the cancellation was lost: the merge read all {reader.result()} chunks"
    assert stream.closed
