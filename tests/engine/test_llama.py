"""The engine's own llama-family code against transformers' logits, on tiny random configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from tokenyard.engine import native
from tokenyard.engine.base import SamplingParams
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE, LlamaRunner
from tokenyard.engine.modeling.llama import HeadRows
from tokenyard.engine.scheduler import ScheduledChunk, SchedulerPlan
from tokenyard.engine.sequence import Sequence

SMALL = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 50000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
CONFIGS: dict[str, Any] = {
    "llama-tied": LlamaConfig(**SMALL, tie_word_embeddings=True),
    "llama3-rope": LlamaConfig(**SMALL, tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE),
    "qwen2-bias": Qwen2Config(**SMALL, tie_word_embeddings=True),
    "mistral": MistralConfig(**SMALL, sliding_window=None),
}


def save_random_model(config: Any, folder: Path) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if config.model_type == "qwen2":  # random init leaves biases at zero: make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_()
                layer.self_attn.k_proj.bias.normal_()
    model.save_pretrained(folder)
    return model


def runner_for(config: Any, folder: Path, quantization: str = "none") -> LlamaRunner:
    return LlamaRunner.load(
        folder,
        config,
        device=torch.device("cpu"),
        dtype=torch.float32,
        quantization=quantization,
        kv_cache_bytes=lambda per_token: 1 << 20,
        max_positions=256,
    )


def make_seq(prompt: list[int]) -> Sequence:
    params = SamplingParams(max_tokens=10)
    return Sequence("r", prompt, params, decode=lambda ids: "", eos_token_ids=(), context_length=256)


def plan_of(*chunks: tuple[Sequence, int, int, bool]) -> SchedulerPlan:
    return SchedulerPlan(chunks=[ScheduledChunk(seq, start, count, sample) for seq, start, count, sample in chunks])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_chunked_prefill_and_decode_match_transformers(name: str, tmp_path: Path) -> None:
    config = CONFIGS[name]
    reference = save_random_model(config, tmp_path)
    runner = runner_for(config, tmp_path)
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    prompt = [(i * 7 + 3) % 97 for i in range(23)]  # crosses a block boundary
    seq = make_seq(prompt)
    manager.allocate(seq, 24)
    with torch.inference_mode():
        runner.run(plan_of((seq, 0, 9, False)))  # a first chunk: causal attention on fresh K/V
        logits = runner.run(plan_of((seq, 9, 14, True))).logits  # the rest, attending to the cached chunk
        expected = reference(input_ids=torch.tensor([prompt])).logits[0, -1]
        torch.testing.assert_close(logits[0], expected, atol=2e-4, rtol=1e-4)
        seq.output_token_ids.append(5)
        logits = runner.run(plan_of((seq, 23, 1, True))).logits  # one decode token over the paged cache
        expected = reference(input_ids=torch.tensor([[*prompt, 5]])).logits[0, -1]
        torch.testing.assert_close(logits[0], expected, atol=2e-4, rtol=1e-4)


def test_decodes_and_a_prefill_batched_together_match_each_alone(tmp_path: Path) -> None:
    config = CONFIGS["llama-tied"]
    reference = save_random_model(config, tmp_path)
    runner = runner_for(config, tmp_path)
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    prompts = [[1, 2, 3, 4, 5], list(range(10, 40)), [50, 60, 70]]
    seqs = [make_seq(p) for p in prompts]
    for seq in seqs:
        manager.allocate(seq, seq.num_tokens + 1)
    with torch.inference_mode():
        runner.run(plan_of((seqs[0], 0, 5, True), (seqs[1], 0, 30, True)))
        for seq in seqs[:2]:
            seq.output_token_ids.append(9)
        logits = runner.run(plan_of((seqs[2], 0, 3, True), (seqs[0], 5, 1, True), (seqs[1], 30, 1, True))).logits
        for row, seq in zip(logits, [seqs[2], seqs[0], seqs[1]], strict=True):
            expected = reference(input_ids=torch.tensor([seq.all_token_ids])).logits[0, -1]
            torch.testing.assert_close(row, expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(("quantization", "tolerance"), [("int8", 0.05), ("int4", 0.5)])
def test_quantised_logits_stay_close(quantization: str, tolerance: float, tmp_path: Path) -> None:
    config = CONFIGS["llama-tied"]
    reference = save_random_model(config, tmp_path)
    runner = runner_for(config, tmp_path, quantization)
    seq = make_seq(list(range(1, 20)))
    BlockManager(runner.num_blocks, BLOCK_SIZE).allocate(seq, 20)
    with torch.inference_mode():
        logits = runner.run(plan_of((seq, 0, 19, True))).logits[0]  # a prompt: the dense weights
        expected = reference(input_ids=torch.tensor([seq.prompt_token_ids])).logits[0, -1]
        assert (logits - expected).abs().max() < tolerance * expected.abs().max()
        seq.output_token_ids.append(int(logits.argmax()))
        logits = runner.run(plan_of((seq, 19, 1, True))).logits[0]  # one decode row: the quantised kernels
        expected = reference(input_ids=torch.tensor([seq.all_token_ids])).logits[0, -1]
        assert (logits - expected).abs().max() < tolerance * expected.abs().max()


def test_large_decode_batch_matches_reference(tmp_path: Path) -> None:
    """Twenty sequences of different lengths decode together: the matmul attention path, with its mask."""
    config = CONFIGS["llama-tied"]
    reference = save_random_model(config, tmp_path)
    runner = runner_for(config, tmp_path)
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    seqs = [make_seq(list(range(1, 3 + 2 * i))) for i in range(20)]
    for seq in seqs:
        manager.allocate(seq, seq.num_tokens + 1)
    with torch.inference_mode():
        runner.run(plan_of(*((seq, 0, seq.num_tokens, False) for seq in seqs)))
        for seq in seqs:
            seq.output_token_ids.append(7)
        logits = runner.run(plan_of(*((seq, seq.num_tokens - 1, 1, True) for seq in seqs))).logits
        for row, seq in zip(logits, seqs, strict=True):
            expected = reference(input_ids=torch.tensor([seq.all_token_ids])).logits[0, -1]
            torch.testing.assert_close(row, expected, atol=2e-4, rtol=1e-4)


@pytest.mark.skipif(native.kernels() is None, reason="the output projection is quantised on the native kernels only")
@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_quantised_tied_model_holds_its_embedding_once(quantization: str, tmp_path: Path) -> None:
    config = LlamaConfig(**{**SMALL, "vocab_size": 96}, tie_word_embeddings=True)  # 96 rows: 8-bit blocks fit
    reference = save_random_model(config, tmp_path)
    runner = runner_for(config, tmp_path, quantization)
    model = runner.model
    assert isinstance(model.embed_tokens, HeadRows)  # no table: the rows come from the output projection
    assert not any(param.shape == (96, 64) for param in model.parameters())
    ids = torch.tensor([0, 5, 95, 5])
    table = reference.model.embed_tokens.weight.detach()  # float32, as the checkpoint holds it
    step = table.abs().amax(dim=1, keepdim=True) / 127  # 8-bit blocks (float16 scales): within a step
    assert bool(((model.embed_tokens(ids) - table[ids]).abs() <= step[ids]).all())
    seq = make_seq(list(range(1, 20)))
    BlockManager(runner.num_blocks, BLOCK_SIZE).allocate(seq, 20)
    with torch.inference_mode():
        logits = runner.run(plan_of((seq, 0, 19, True))).logits[0]
        expected = reference(input_ids=torch.tensor([seq.prompt_token_ids])).logits[0, -1]
    tolerance = 0.05 if quantization == "int8" else 0.5  # as test_quantised_logits_stay_close
    assert (logits - expected).abs().max() < tolerance * expected.abs().max()
