"""EngineOutputs: timed waits that never cancel the engine's iterator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from tokenyard.engine.base import GenerationOutput
from tokenyard.worker.outputs import EngineOutputs


def output(text: str, finish: bool = False) -> GenerationOutput:
    return GenerationOutput(text, 1, 3, 1, "stop" if finish else None)


async def slow_engine(log: list[str]) -> AsyncGenerator[GenerationOutput, None]:
    try:
        await asyncio.sleep(0.15)
        yield output("a")
        yield output("b", finish=True)
    finally:
        log.append("closed")


async def test_timeouts_return_none_without_losing_the_output() -> None:
    log: list[str] = []
    outputs = EngineOutputs(slow_engine(log))
    assert await outputs.next(timeout=0.05) is None
    assert await outputs.next(timeout=0.05) is None
    first = await outputs.next(timeout=1)
    assert first is not None and first.text == "a"
    second = await outputs.next(timeout=1)
    assert second is not None and second.finish_reason == "stop"
    with pytest.raises(StopAsyncIteration):
        await outputs.next(timeout=1)
    assert log == ["closed"]


async def test_closing_while_waiting_closes_the_engine_iterator() -> None:
    log: list[str] = []
    outputs = EngineOutputs(slow_engine(log))
    assert await outputs.next(timeout=0.01) is None
    await outputs.aclose()
    assert log == ["closed"]
