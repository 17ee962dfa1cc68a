"""Guided requests through the batching engine on random-weight models: the own llama runner and the
transformers fallback both return schema-valid JSON, end with "stop" when the grammar completes,
"length" when the budget ends first, and batch with unguided requests."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import GenerationOutput, SamplingParams
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.guided import Guide
from tokenyard.engine.loader import build_engine
from tokenyard.engine.model_runner import HFRunner
from tokenyard.errors import InvalidRequestError

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "level": {"enum": ["low", "high"]}},
    "required": ["ok", "level"],
    "additionalProperties": False,
}
GUIDE = Guide("json_schema", json.dumps(SCHEMA))
CONFIG = WorkerConfig(device="cpu", kv_cache_memory=0.01, batch_wait_timeout=0.02)


async def generate(engine: BatchingGenerationEngine, params: SamplingParams, request_id: str) -> list[GenerationOutput]:
    ids = engine.tokenizer.encode_text("Answer in JSON:")
    return [output async for output in engine.generate(request_id, ids, params)]


@pytest.fixture
async def engine(tiny_chat_model_dir: Path) -> BatchingGenerationEngine:
    built = build_engine(tiny_chat_model_dir, CONFIG, device=torch.device("cpu"), dtype=torch.float32)
    await built.start()
    yield built
    await built.shutdown()


async def test_guided_and_plain_requests_share_a_batch(engine: BatchingGenerationEngine) -> None:
    guided = [SamplingParams(max_tokens=64, temperature=t, seed=i, guide=GUIDE) for i, t in enumerate([0, 1, 1])]
    plain = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    results = await asyncio.gather(
        *(generate(engine, params, f"g{i}") for i, params in enumerate(guided)), generate(engine, plain, "plain")
    )
    for outputs in results[:3]:
        assert outputs[-1].finish_reason == "stop"
        jsonschema.validate(json.loads("".join(o.text for o in outputs)), SCHEMA)
    assert results[3][-1].num_output_tokens == 8


async def test_a_budget_that_ends_first_gives_length(engine: BatchingGenerationEngine) -> None:
    outputs = await generate(engine, SamplingParams(max_tokens=3, temperature=0, guide=GUIDE), "short")
    assert outputs[-1].finish_reason == "length"
    assert "".join(o.text for o in outputs).startswith("{")


async def test_an_invalid_schema_is_refused_before_queueing(engine: BatchingGenerationEngine) -> None:
    params = SamplingParams(max_tokens=8, guide=Guide("json_schema", '{"type": 3}', param="response_format"))
    with pytest.raises(InvalidRequestError) as caught:
        await generate(engine, params, "bad")
    assert caught.value.param == "response_format"


async def test_the_transformers_fallback_is_guided_too(tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_chat_model_dir / file, tmp_path / file)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        eos = AutoTokenizer.from_pretrained(tmp_path).eos_token_id
        config = GPT2Config(
            vocab_size=400, n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=eos, eos_token_id=eos
        )
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    fallback = build_engine(tmp_path, CONFIG, device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(fallback._runner, HFRunner)
    await fallback.start()
    try:
        outputs = await generate(fallback, SamplingParams(max_tokens=64, temperature=1, seed=3, guide=GUIDE), "hf")
    finally:
        await fallback.shutdown()
    assert outputs[-1].finish_reason == "stop"
    jsonschema.validate(json.loads("".join(o.text for o in outputs)), SCHEMA)
