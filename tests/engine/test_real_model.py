"""The batching engine on the real default model (SmolLM2-135M-Instruct): answers, Chinese, batching."""

from __future__ import annotations

import asyncio
import time

import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import GenerationOutput, SamplingParams
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import load_engine
from tokenyard.models import ResolvedModel
from tokenyard.protocol.internal import ChatMessage

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "请用中文介绍一下北京。", "Count to five."]


def text_of(outputs: list[GenerationOutput]) -> str:
    return "".join(output.text for output in outputs)


def load(model: ResolvedModel, **flags: object) -> BatchingGenerationEngine:
    engine = load_engine(model, WorkerConfig(device="cpu", kv_cache_memory=0.5, **flags))  # type: ignore[arg-type]
    assert isinstance(engine, BatchingGenerationEngine)
    return engine


async def ask(
    engine: BatchingGenerationEngine, question: str, params: SamplingParams, rid: str
) -> list[GenerationOutput]:
    prompt = engine.tokenizer.encode_chat([ChatMessage(role="user", content=question)])
    return [o async for o in engine.generate(rid, prompt, params)]


async def test_real_model_answers_paris_and_streams_chinese(default_chat_model: ResolvedModel) -> None:
    engine = load(default_chat_model)  # the defaults: int4 (the file's Q4_1) where the native kernels load
    assert engine.context_length == 8192
    await engine.start()
    try:
        started = time.monotonic()
        paris = await ask(engine, QUESTIONS[0], SamplingParams(max_tokens=24, temperature=0), "paris")
        elapsed = time.monotonic() - started
        chinese = await ask(engine, QUESTIONS[2], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True), "zh")
    finally:
        await engine.shutdown()
    assert "Paris" in text_of(paris)
    assert paris[-1].finish_reason == "stop"
    assert paris[-1].num_output_tokens / elapsed > 5  # a sanity floor far below what it does
    assert any("\u4e00" <= char <= "\u9fff" for char in text_of(chinese))
    assert not any("\ufffd" in output.text for output in chinese[:-1])  # never a cut character mid-stream
    # max_tokens may cut the last character: only then, and only at the very end, does U+FFFD appear.
    assert "\ufffd" not in chinese[-1].text.rstrip("\ufffd")


async def test_real_model_batched_greedy_equals_unbatched_in_float32(default_chat_model: ResolvedModel) -> None:
    engine = load(default_chat_model, dtype="float32", max_batch_size=4, batch_wait_timeout=0.05)
    await engine.start()
    try:
        params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
        alone = [
            [t for o in await ask(engine, q, params, f"a{i}") for t in o.token_ids] for i, q in enumerate(QUESTIONS)
        ]
        batched = await asyncio.gather(*(ask(engine, q, params, f"b{i}") for i, q in enumerate(QUESTIONS)))
    finally:
        await engine.shutdown()
    assert [[t for o in outputs for t in o.token_ids] for outputs in batched] == alone
    assert torch.get_num_threads() >= 1
