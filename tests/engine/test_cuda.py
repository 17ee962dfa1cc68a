"""The batching engine on a CUDA device; skipped where there is none (run by scripts/gpu-check.sh)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from tests.engine.test_decode_graphs import greedy_streams
from tests.engine.test_llama import CONFIGS, save_random_model
from tokenyard.config import WorkerConfig
from tokenyard.engine.base import SamplingParams
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import build_engine, load_engine
from tokenyard.models import ResolvedModel
from tokenyard.protocol.internal import ChatMessage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
CUDA = torch.device("cuda")
PROMPTS = ["Hello world, 北京", "The quick brown fox", "你好，世界！今天天气很好。"]


async def generate(engine: BatchingGenerationEngine, rid: str, text: str, params: SamplingParams) -> list[int]:
    ids = engine.tokenizer.encode_text(text)
    return [t async for output in engine.generate(rid, ids, params) for t in output.token_ids]


async def test_batched_greedy_equals_one_at_a_time_on_cuda(tiny_chat_model_dir: Path) -> None:
    config = WorkerConfig(device="cuda", kv_cache_memory=0.05, batch_wait_timeout=0.05)
    engine = build_engine(tiny_chat_model_dir, config, device=CUDA, dtype=torch.float32)
    await engine.start()
    try:
        params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
        alone = [await generate(engine, f"a{i}", p, params) for i, p in enumerate(PROMPTS)]
        together = await asyncio.gather(*(generate(engine, f"b{i}", p, params) for i, p in enumerate(PROMPTS)))
        seeded = SamplingParams(max_tokens=8, temperature=1.0, seed=3, ignore_eos=True)
        assert await generate(engine, "s1", PROMPTS[0], seeded) == await generate(engine, "s2", PROMPTS[0], seeded)
    finally:
        await engine.shutdown()
    assert list(together) == alone


def test_captured_decode_graphs_match_eager_decoding(tmp_path: Path) -> None:
    save_random_model(CONFIGS["llama-tied"], tmp_path)
    plain, padded, captured = greedy_streams(tmp_path, ("off", "eager", "capture"), "cuda")
    assert padded == plain
    assert captured == plain


async def test_real_model_answers_paris_on_cuda(default_chat_model: ResolvedModel) -> None:
    engine = load_engine(default_chat_model, WorkerConfig(device="cuda", kv_cache_memory=1.0))
    assert isinstance(engine, BatchingGenerationEngine)
    await engine.start()
    try:
        prompt = engine.tokenizer.encode_chat([ChatMessage(role="user", content="What is the capital of France?")])
        outputs = [o async for o in engine.generate("paris", prompt, SamplingParams(max_tokens=24, temperature=0))]
    finally:
        await engine.shutdown()
    assert "Paris" in "".join(o.text for o in outputs)
