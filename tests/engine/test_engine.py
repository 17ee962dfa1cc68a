"""BatchingGenerationEngine on the tiny model: streaming, stopping, aborts, queue limits, batching, prefixes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import GenerationOutput, SamplingParams
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import build_engine
from tokenyard.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    OverloadedError,
    TokenyardError,
    WorkerError,
)

CPU = torch.device("cpu")
PROMPT = "Hello world, 北京"
PROMPTS = [
    "Hello world, 北京",
    "The quick brown fox",
    "你好，世界！今天天气很好。",
    "Stop strings end a completion early",
]
EngineFactory = Callable[..., BatchingGenerationEngine]


@pytest.fixture
async def make_engine(tiny_chat_model_dir: Path) -> AsyncIterator[EngineFactory]:
    engines: list[BatchingGenerationEngine] = []

    def make(max_batch_size: int = 4, max_queue_length: int = 8, **overrides: Any) -> BatchingGenerationEngine:
        config = WorkerConfig(
            device="cpu",
            max_batch_size=max_batch_size,
            max_queue_length=max_queue_length,
            batch_wait_timeout=overrides.pop("batch_wait_timeout", 0.0),
            kv_cache_memory=overrides.pop("kv_cache_memory", 0.01),
            context_length=overrides.pop("context_length", None),
        )
        engine = build_engine(tiny_chat_model_dir, config, device=CPU, dtype=torch.float32)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.shutdown()


async def run(
    engine: BatchingGenerationEngine, params: SamplingParams, request_id: str = "r", prompt: str = PROMPT
) -> list[GenerationOutput]:
    await engine.start()
    ids = engine.tokenizer.encode_text(prompt)
    return [output async for output in engine.generate(request_id, ids, params)]


def text_of(outputs: list[GenerationOutput]) -> str:
    return "".join(output.text for output in outputs)


def ids_of(outputs: list[GenerationOutput]) -> list[int]:
    return [token for output in outputs for token in output.token_ids]


def reference_greedy_ids(model_dir: Path, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by full forward passes without any cache."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


async def test_greedy_matches_uncached_reference(make_engine: EngineFactory, tiny_chat_model_dir: Path) -> None:
    engine = make_engine()
    outputs = await run(engine, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))
    expected_ids = reference_greedy_ids(tiny_chat_model_dir, engine.tokenizer.encode_text(PROMPT), 24)
    assert ids_of(outputs) == expected_ids
    expected = AutoTokenizer.from_pretrained(tiny_chat_model_dir).decode(expected_ids, skip_special_tokens=True)
    assert text_of(outputs) == expected


async def test_batched_greedy_equals_one_at_a_time(make_engine: EngineFactory) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    alone = make_engine(max_batch_size=1)
    singles = [ids_of(await run(alone, params, f"s{i}", p)) for i, p in enumerate(PROMPTS)]
    batched = make_engine(max_batch_size=4)
    together = await asyncio.gather(*(run(batched, params, f"b{i}", p) for i, p in enumerate(PROMPTS)))
    assert [ids_of(outputs) for outputs in together] == singles


async def test_seeded_sampling_is_reproducible_inside_mixed_batches(make_engine: EngineFactory) -> None:
    engine = make_engine(max_batch_size=4)
    seeded = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7, ignore_eos=True)
    alone = ids_of(await run(engine, seeded, "alone"))
    others = [
        SamplingParams(max_tokens=12, temperature=0.8, top_k=5, ignore_eos=True),
        SamplingParams(max_tokens=12, temperature=0),
    ]
    mixed = await asyncio.gather(
        run(engine, others[0], "x", PROMPTS[1]), run(engine, seeded, "again"), run(engine, others[1], "y", PROMPTS[2])
    )
    assert ids_of(mixed[1]) == alone
    other_seed = ids_of(await run(engine, SamplingParams(max_tokens=12, temperature=1.0, seed=8, ignore_eos=True), "z"))
    assert other_seed != alone


async def test_max_tokens_ends_with_length(make_engine: EngineFactory) -> None:
    engine = make_engine()
    outputs = await run(engine, SamplingParams(max_tokens=7, temperature=1.0, ignore_eos=True))
    assert [o.finish_reason for o in outputs] == [None] * 6 + ["length"]
    assert outputs[-1].num_output_tokens == 7
    assert outputs[-1].num_prompt_tokens == len(engine.tokenizer.encode_text(PROMPT))


async def test_stop_string_is_held_back_and_cuts_the_text(make_engine: EngineFactory) -> None:
    engine = make_engine()
    full = text_of(await run(engine, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True), "a", PROMPTS[1]))
    stop = full[12:15]
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=(stop,))
    outputs = await run(engine, params, "b", PROMPTS[1])
    assert outputs[-1].finish_reason == "stop"
    assert text_of(outputs) == full[: full.index(stop)]
    assert all(stop not in o.text for o in outputs)


async def test_logprobs_come_with_top_alternatives(make_engine: EngineFactory) -> None:
    engine = make_engine()
    outputs = await run(engine, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=2))
    entries = [entry for output in outputs for entry in output.logprobs or []]
    # A token's logprob comes with the output that streams its text (later, for a cut character).
    assert [entry.token_id for entry in entries] == ids_of(outputs)
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top) == 2 and entry.top[0][0] == entry.token_id  # greedy picks the most likely


async def test_logprobs_follow_the_text_cut_by_a_stop_string(make_engine: EngineFactory) -> None:
    engine = make_engine()
    params = SamplingParams(max_tokens=30, temperature=1.0, seed=5, ignore_eos=True, logprobs=0)
    full = text_of(await run(engine, params, "a", PROMPTS[1]))  # cut characters, multi-char tokens
    stop = full[9:12]
    outputs = await run(engine, replace(params, stop=(stop,)), "b", PROMPTS[1])
    text = text_of(outputs)
    assert text == full[: full.index(stop)] and text
    ids = [entry.token_id for output in outputs for entry in output.logprobs or []]
    # The tokens reported cover the text streamed, and each contributed some of it: a token wholly
    # inside the stop string is not reported.
    assert engine.tokenizer.decode(ids).startswith(text)
    assert len(engine.tokenizer.decode(ids[:-1])) < len(text)


async def test_prompt_logprobs_match_the_reference_and_skip_the_prefix_cache(
    make_engine: EngineFactory, tiny_chat_model_dir: Path
) -> None:
    engine = make_engine()
    prompt = PROMPTS[2] * 3  # longer than one 16-token block
    ids = engine.tokenizer.encode_text(prompt)
    plain = SamplingParams(max_tokens=1, temperature=0)
    first = await run(engine, plain, "warm", prompt)
    assert first[0].num_cached_tokens == 0 and first[0].prompt_logprobs is None
    again = await run(engine, plain, "cached", prompt)
    assert again[0].num_cached_tokens == (len(ids) - 1) // 16 * 16  # the prefix cache served it
    scored = await run(engine, replace(plain, prompt_logprobs=3), "scored", prompt)
    entries = scored[0].prompt_logprobs
    assert entries is not None and scored[0].num_cached_tokens == 0  # computed, not reused
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        reference = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)  # [S, V]
    assert entries[0] is None and len(entries) == len(ids)
    for position, entry in enumerate(entries[1:], start=1):
        assert entry is not None and entry.token_id == ids[position]
        assert entry.logprob == pytest.approx(float(reference[position - 1, ids[position]]), abs=1e-4)
        assert [token for token, _ in entry.top] == reference[position - 1].topk(3).indices.tolist()


async def test_prompt_logprobs_survive_a_chunked_prefill(make_engine: EngineFactory) -> None:
    engine = make_engine()
    whole = await run(engine, SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0), "whole", PROMPTS[3])
    engine._scheduler.max_num_batched_tokens = 4  # the prompt now runs in several steps
    chunked = await run(engine, SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0), "chunked", PROMPTS[3])
    expected, got = whole[0].prompt_logprobs, chunked[0].prompt_logprobs
    assert expected is not None and got is not None and len(got) == len(expected)
    for a, b in zip(expected[1:], got[1:], strict=True):
        assert a is not None and b is not None and a.logprob == pytest.approx(b.logprob, abs=1e-4)


async def test_closing_the_stream_aborts_the_request_promptly(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    stream = engine.generate("r", engine.tokenizer.encode_text(PROMPT), SamplingParams(max_tokens=500, ignore_eos=True))
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    assert engine.stats().num_running == 0
    await asyncio.sleep(0.1)
    generated = engine.stats().extra["tokens_generated"]
    await asyncio.sleep(0.2)
    assert engine.stats().extra["tokens_generated"] == generated
    stats = engine.stats().extra
    assert stats["kv_blocks_free"] == stats["kv_blocks_total"]


async def test_abort_by_id_ends_the_stream(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    stream = engine.generate("r", engine.tokenizer.encode_text(PROMPT), SamplingParams(max_tokens=500, ignore_eos=True))
    await anext(stream)
    await engine.abort("r")
    rest = [output async for output in stream]
    assert len(rest) < 499 and all(output.finish_reason is None for output in rest)


async def test_full_queue_is_refused_with_429_and_retry_after(make_engine: EngineFactory) -> None:
    engine = make_engine(max_batch_size=1, max_queue_length=1)
    await engine.start()
    prompt = engine.tokenizer.encode_text(PROMPT)
    params = SamplingParams(max_tokens=500, ignore_eos=True)
    running, waiting = engine.generate("a", prompt, params), engine.generate("b", prompt, params)
    await anext(running)
    waiter = asyncio.ensure_future(anext(waiting))
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
    assert order.index("b") < len(order) - 1 - order[::-1].index("a")


async def test_same_prefix_computes_fewer_prompt_tokens(make_engine: EngineFactory) -> None:
    engine = make_engine()
    system = "The quick brown fox jumps over the lazy dog. " * 4
    params = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
    await run(engine, params, "first", system + "What is the capital of France?")
    computed = engine.stats().extra["prompt_tokens_computed"]
    await run(engine, params, "second", system + "Hello world!")
    second_prompt = len(engine.tokenizer.encode_text(system + "Hello world!"))
    assert engine.stats().extra["prompt_tokens_cached"] >= 32
    assert engine.stats().extra["prompt_tokens_computed"] - computed <= second_prompt - 32


async def test_identical_prompts_arriving_together_share_one_prefill(make_engine: EngineFactory) -> None:
    engine = make_engine()
    prompt = "Streaming text must never cut a character in half. " * 3
    length = len(engine.tokenizer.encode_text(prompt))
    params = [SamplingParams(max_tokens=4, temperature=1.0, seed=i, ignore_eos=True) for i in range(4)]
    await asyncio.gather(*(run(engine, p, f"n{i}", prompt) for i, p in enumerate(params)))
    shared = (length - 1) // 16 * 16
    assert engine.stats().extra["prompt_tokens_cached"] == 3 * shared


async def test_long_prompt_is_chunked_while_another_decodes(make_engine: EngineFactory) -> None:
    engine = make_engine(max_batch_size=2)
    engine._scheduler.max_num_batched_tokens = 16  # force chunks on a tiny model
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    long_prompt = "What is the capital of France? The capital of France is Paris. " * 3
    expected_short = ids_of(await run(engine, params, "s0"))
    expected_long = ids_of(await run(engine, params, "l0", long_prompt))
    short, long = await asyncio.gather(run(engine, params, "s1"), run(engine, params, "l1", long_prompt))
    assert (ids_of(short), ids_of(long)) == (expected_short, expected_long)


async def test_a_full_kv_cache_preempts_and_still_finishes_everyone(make_engine: EngineFactory) -> None:
    block_bytes = 16 * 2 * 2 * 2 * 16 * 4  # tokens x (K, V) x layers x KV heads x head dim x float32
    engine = make_engine(max_batch_size=4, kv_cache_memory=6 * block_bytes / 2**30, context_length=96)
    params = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    alone = [ids_of(await run(engine, params, f"a{i}", p)) for i, p in enumerate(PROMPTS[:3])]
    together = await asyncio.gather(*(run(engine, params, f"t{i}", p) for i, p in enumerate(PROMPTS[:3])))
    assert [ids_of(outputs) for outputs in together] == alone
    assert engine.stats().extra["preemptions"] > 0


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
    stream = engine.generate("r", engine.tokenizer.encode_text(PROMPT), SamplingParams(max_tokens=500, ignore_eos=True))
    await anext(stream)
    await engine.shutdown()
    with pytest.raises(WorkerError):
        async for _ in stream:
            pass


async def test_a_failing_step_fails_its_requests_not_the_engine(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    run_step = engine._runner.run
    calls = {"n": 0}

    def fails_once(plan: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory")
        return run_step(plan)

    monkeypatch.setattr(engine._runner, "run", fails_once)
    with pytest.raises(TokenyardError, match="out of memory"):
        await run(engine, SamplingParams(max_tokens=5, ignore_eos=True), "bad")
    good = await run(engine, SamplingParams(max_tokens=5, ignore_eos=True), "good")
    assert good[-1].finish_reason == "length"
