"""SimpleGenerationEngine on the tiny model (machinery) and the real default model (answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import GenerationOutput, SamplingParams
from tokenyard.engine.loader import load_engine
from tokenyard.engine.models import ResolvedModel
from tokenyard.engine.simple import SimpleGenerationEngine
from tokenyard.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    OverloadedError,
    TokenyardError,
    WorkerError,
)
from tokenyard.protocol.internal import ChatMessage

CPU = torch.device("cpu")
PROMPT = "Hello world, 北京"
EngineFactory = Callable[..., SimpleGenerationEngine]


@pytest.fixture
async def make_engine(tiny_chat_model_dir: Path) -> AsyncIterator[EngineFactory]:
    """Started engines on the tiny model, shut down after the test."""
    engines: list[SimpleGenerationEngine] = []

    def make(max_batch_size: int = 4, max_queue_length: int = 8) -> SimpleGenerationEngine:
        engine = SimpleGenerationEngine.load(
            tiny_chat_model_dir,
            device=CPU,
            dtype=torch.float32,
            max_batch_size=max_batch_size,
            max_queue_length=max_queue_length,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.shutdown()


async def run(engine: SimpleGenerationEngine, params: SamplingParams, request_id: str = "r") -> list[GenerationOutput]:
    await engine.start()
    prompt = engine.tokenizer.encode_text(PROMPT)
    return [output async for output in engine.generate(request_id, prompt, params)]


def text_of(outputs: list[GenerationOutput]) -> str:
    return "".join(output.text for output in outputs)


def reference_greedy_ids(model_dir: Path, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by full forward passes without any cache: what the engine must reproduce."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


async def test_greedy_matches_uncached_reference_and_is_deterministic(
    make_engine: EngineFactory, tiny_chat_model_dir: Path
) -> None:
    engine = make_engine()
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    first, second = await run(engine, params, "a"), await run(engine, params, "b")
    expected_ids = reference_greedy_ids(tiny_chat_model_dir, engine.tokenizer.encode_text(PROMPT), 24)
    expected = AutoTokenizer.from_pretrained(tiny_chat_model_dir).decode(expected_ids, skip_special_tokens=True)
    assert text_of(first) == text_of(second) == expected


async def test_max_tokens_ends_with_length_and_exactly_that_many_tokens(make_engine: EngineFactory) -> None:
    outputs = await run(make_engine(), SamplingParams(max_tokens=7, temperature=1.0, ignore_eos=True))
    assert [o.finish_reason for o in outputs] == [None] * 6 + ["length"]
    assert sum(o.num_new_tokens for o in outputs) == 7
    assert outputs[-1].num_output_tokens == 7
    assert outputs[-1].num_prompt_tokens == len(make_engine().tokenizer.encode_text(PROMPT))


async def test_same_seed_same_text_different_seed_different_text(make_engine: EngineFactory) -> None:
    engine = make_engine()

    def params(seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=20, temperature=1.0, seed=seed, ignore_eos=True)

    first = text_of(await run(engine, params(1), "a"))
    again = text_of(await run(engine, params(1), "b"))
    other = text_of(await run(engine, params(2), "c"))
    assert first == again
    assert first != other


async def test_stop_token_id_ends_with_stop_and_is_not_in_the_text(
    make_engine: EngineFactory, tiny_chat_model_dir: Path
) -> None:
    engine = make_engine()
    greedy = reference_greedy_ids(tiny_chat_model_dir, engine.tokenizer.encode_text(PROMPT), 6)
    stop_at = next(i for i, token in enumerate(greedy) if token not in greedy[:i])  # its first appearance
    params = SamplingParams(max_tokens=6, temperature=0.0, stop_token_ids=(greedy[stop_at],), ignore_eos=True)
    outputs = await run(engine, params)
    assert outputs[-1].finish_reason == "stop"
    assert outputs[-1].num_output_tokens == stop_at + 1
    assert text_of(outputs) == engine._hf_tokenizer.decode(greedy[:stop_at])


async def test_eos_stops_unless_ignore_eos(make_engine: EngineFactory, tiny_chat_model_dir: Path) -> None:
    engine = make_engine()
    greedy = reference_greedy_ids(tiny_chat_model_dir, engine.tokenizer.encode_text(PROMPT), 8)
    engine._eos_ids = {greedy[2]}  # random weights rarely pick the real EOS, so declare one they pick
    stopped = await run(engine, SamplingParams(max_tokens=8, temperature=0.0), "a")
    assert (stopped[-1].finish_reason, stopped[-1].num_output_tokens) == ("stop", greedy.index(greedy[2]) + 1)
    ignored = await run(engine, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), "b")
    assert (ignored[-1].finish_reason, ignored[-1].num_output_tokens) == ("length", 8)


async def test_stop_string_cuts_the_text_before_it(make_engine: EngineFactory) -> None:
    engine = make_engine()
    full = text_of(await run(engine, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True), "a"))
    stop = full[12:15]
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=(stop,))
    outputs = await run(engine, params, "b")
    assert outputs[-1].finish_reason == "stop"
    assert text_of(outputs) == full[: full.index(stop)]


async def test_closing_the_stream_aborts_the_request_promptly(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    stream = engine.generate("r", engine.tokenizer.encode_text(PROMPT), SamplingParams(max_tokens=200, ignore_eos=True))
    for _ in range(3):
        await anext(stream)
    assert engine.stats().num_running == 1
    await stream.aclose()  # what the worker does when the client disconnects
    assert engine.stats().num_running == 0
    await asyncio.sleep(0.1)  # let a step that was already under way finish
    generated = engine.stats().extra["tokens_generated"]
    await asyncio.sleep(0.3)
    assert engine.stats().extra["tokens_generated"] == generated  # no more work for the aborted request


async def test_abort_by_id_ends_the_stream(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    stream = engine.generate("r", engine.tokenizer.encode_text(PROMPT), SamplingParams(max_tokens=200, ignore_eos=True))
    await anext(stream)
    await engine.abort("r")
    rest = [output async for output in stream]
    assert len(rest) < 199
    assert all(output.finish_reason is None for output in rest)
    assert engine.stats().num_running == 0


async def test_full_queue_is_refused_with_429_and_retry_after(make_engine: EngineFactory) -> None:
    engine = make_engine(max_batch_size=1, max_queue_length=1)
    await engine.start()
    prompt = engine.tokenizer.encode_text(PROMPT)
    params = SamplingParams(max_tokens=200, ignore_eos=True)
    running, waiting = engine.generate("a", prompt, params), engine.generate("b", prompt, params)
    await anext(running)
    waiter = asyncio.ensure_future(anext(waiting))  # queued behind "a"
    await asyncio.sleep(0.05)
    assert (engine.stats().num_running, engine.stats().num_waiting) == (1, 1)
    with pytest.raises(OverloadedError) as raised:
        await anext(engine.generate("c", prompt, params))
    assert raised.value.status_code == 429
    assert raised.value.retry_after is not None and raised.value.retry_after >= 1
    waiter.cancel()
    await running.aclose()


async def test_concurrent_requests_interleave(make_engine: EngineFactory) -> None:
    engine = make_engine(max_batch_size=2)
    await engine.start()
    prompt, order = engine.tokenizer.encode_text(PROMPT), []

    async def consume(name: str) -> None:
        async for _ in engine.generate(name, prompt, SamplingParams(max_tokens=20, ignore_eos=True)):
            order.append(name)

    await asyncio.gather(consume("a"), consume("b"))
    assert order.count("a") == order.count("b") == 20
    # Both make progress before either finishes.
    assert order.index("b") < len(order) - 1 - order[::-1].index("a")
    assert order.index("a") < len(order) - 1 - order[::-1].index("b")


async def test_requests_beyond_the_batch_wait_their_turn_in_order(make_engine: EngineFactory) -> None:
    engine = make_engine(max_batch_size=1)
    await engine.start()
    prompt, order = engine.tokenizer.encode_text(PROMPT), []

    async def consume(name: str) -> None:
        async for _ in engine.generate(name, prompt, SamplingParams(max_tokens=5, ignore_eos=True)):
            order.append(name)

    await asyncio.gather(consume("a"), consume("b"), consume("c"))
    assert order == ["a"] * 5 + ["b"] * 5 + ["c"] * 5


async def test_bad_requests_are_refused_before_queueing(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    cases: list[tuple[list[int], SamplingParams, type[Exception]]] = [
        ([], SamplingParams(max_tokens=5), InvalidRequestError),
        ([1, 10**6], SamplingParams(max_tokens=5), InvalidRequestError),
        ([1, 2, 3], SamplingParams(max_tokens=2046), ContextLengthExceededError),
    ]
    for prompt, params, error in cases:
        with pytest.raises(error):
            await anext(engine.generate("r", prompt, params))
    assert engine.stats().num_waiting == engine.stats().num_running == 0


async def test_stats_report_throughput_and_idle(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await run(engine, SamplingParams(max_tokens=10, ignore_eos=True))
    stats = engine.stats()
    assert stats.tokens_per_second > 0
    assert (stats.num_running, stats.num_waiting, stats.seconds_since_progress) == (0, 0, 0.0)


async def test_shutdown_ends_pending_streams_with_an_error(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    stream = engine.generate("r", engine.tokenizer.encode_text(PROMPT), SamplingParams(max_tokens=200, ignore_eos=True))
    await anext(stream)
    await engine.shutdown()
    with pytest.raises(WorkerError):
        async for _ in stream:
            pass


async def test_a_failing_request_does_not_stop_the_others(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    forward = engine._forward

    def fails_for_one(request: Any) -> torch.Tensor:
        if request.request_id == "bad":
            raise RuntimeError("out of memory")
        return forward(request)

    monkeypatch.setattr(engine, "_forward", fails_for_one)
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    bad, good = await asyncio.gather(run(engine, params, "bad"), run(engine, params, "good"), return_exceptions=True)
    assert isinstance(bad, TokenyardError)
    assert bad.status_code == 500
    assert "out of memory" in bad.message
    assert isinstance(good, list)
    assert good[-1].finish_reason == "length"


async def test_real_model_answers_paris(default_chat_model: ResolvedModel) -> None:
    engine = load_engine(default_chat_model, WorkerConfig(device="cpu"))
    assert isinstance(engine, SimpleGenerationEngine)
    assert engine.context_length == 8192
    await engine.start()
    try:
        prompt = engine.tokenizer.encode_chat([ChatMessage(role="user", content="What is the capital of France?")])
        started = time.monotonic()
        outputs = [o async for o in engine.generate("paris", prompt, SamplingParams(max_tokens=24, temperature=0))]
        elapsed = time.monotonic() - started
    finally:
        await engine.shutdown()
    assert "Paris" in text_of(outputs)
    assert outputs[-1].finish_reason == "stop"  # the model ended its answer with <|im_end|>
    assert outputs[-1].num_output_tokens / elapsed > 2  # a sanity floor, far below the ~20 tok/s measured


async def test_real_model_streams_chinese_without_broken_characters(default_chat_model: ResolvedModel) -> None:
    engine = load_engine(default_chat_model, WorkerConfig(device="cpu"))
    assert isinstance(engine, SimpleGenerationEngine)
    await engine.start()
    try:
        prompt = engine.tokenizer.encode_chat([ChatMessage(role="user", content="请用中文介绍一下北京。")])
        params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
        outputs = [o async for o in engine.generate("zh", prompt, params)]
    finally:
        await engine.shutdown()
    text = text_of(outputs)
    assert any("\u4e00" <= char <= "\u9fff" for char in text)  # it did answer in Chinese
    assert not any("\ufffd" in output.text for output in outputs)
