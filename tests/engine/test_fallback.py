"""Architectures without own model code (GPT-2, GPT-NeoX, Falcon) run batched through transformers."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, FalconConfig, GPT2Config, GPTNeoXConfig

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import SamplingParams
from tokenyard.engine.loader import build_engine
from tokenyard.engine.model_runner import HFRunner

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PROMPTS = ["Hello world", "The quick brown fox jumps over", "你好，世界"]


def tiny_config(name: str, vocab: int) -> Any:
    if name == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128)
    if name == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    return FalconConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128
    )


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "falcon"])
async def test_batched_greedy_matches_transformers(name: str, tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    for file in TOKENIZER_FILES:
        if (tiny_chat_model_dir / file).is_file():
            shutil.copy(tiny_chat_model_dir / file, tmp_path / file)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(name, vocab=400)).eval()
    model.save_pretrained(tmp_path)
    config = WorkerConfig(device="cpu", kv_cache_memory=0.01, batch_wait_timeout=0.05)
    engine = build_engine(tmp_path, config, device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(engine._runner, HFRunner)
    await engine.start()
    try:
        params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)

        async def generate(i: int, text: str) -> list[int]:
            ids = engine.tokenizer.encode_text(text)
            return [t async for output in engine.generate(f"r{i}", ids, params) for t in output.token_ids]

        outputs = await asyncio.gather(*(generate(i, text) for i, text in enumerate(PROMPTS)))
    finally:
        await engine.shutdown()
    for text, generated in zip(PROMPTS, outputs, strict=True):
        ids = engine.tokenizer.encode_text(text)
        with torch.inference_mode():
            for _ in range(6):
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        assert generated == ids[-6:]


async def test_prompt_logprobs_through_transformers(tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    for file in TOKENIZER_FILES:
        if (tiny_chat_model_dir / file).is_file():
            shutil.copy(tiny_chat_model_dir / file, tmp_path / file)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab=400)).eval()
    model.save_pretrained(tmp_path)
    engine = build_engine(
        tmp_path, WorkerConfig(device="cpu", kv_cache_memory=0.01), device=torch.device("cpu"), dtype=torch.float32
    )
    await engine.start()
    try:
        ids = engine.tokenizer.encode_text(PROMPTS[1])
        engine._scheduler.max_num_batched_tokens = len(ids) - 1  # the last chunk is one token: no scoring
        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1)
        outputs = [output async for output in engine.generate("p", ids, params)]
    finally:
        await engine.shutdown()
    entries = outputs[0].prompt_logprobs
    with torch.inference_mode():
        reference = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], dim=-1)  # [S, V]
    assert entries is not None and entries[0] is None and len(entries) == len(ids)
    for position, entry in enumerate(entries[1:], start=1):
        assert entry is not None
        assert entry.logprob == pytest.approx(float(reference[position - 1, ids[position]]), abs=1e-4)
