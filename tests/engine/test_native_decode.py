"""Decode-only steps through the native layer loop (`decode_layers`) against the model's own forward.

The native loop rounds every intermediate where the Python model code does, so greedy tokens must be
identical. Logits agree up to float noise (an exp computed differently can move an activation across an
int8 rounding step of the next quantised layer: a fraction of a percent). Skipped, with the reason,
where the kernels cannot be built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.test_llama import CONFIGS, make_seq, plan_of, save_random_model
from tokenyard.engine import native
from tokenyard.engine.decode_paths import EagerDecode, NativeDecode
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE, LlamaRunner
from tokenyard.engine.modeling.native_decode import NativeDecoder

REASON = native.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")
SHAPE = dict(hidden_size=64, intermediate_size=96, num_attention_heads=2, num_key_value_heads=1, head_dim=32)


def quantised_runner(name: str, folder: Path, dtype: torch.dtype, quantization: str) -> LlamaRunner:
    config = CONFIGS[name].__class__(**{**CONFIGS[name].to_dict(), **SHAPE})
    save_random_model(config, folder)
    return LlamaRunner.load(
        folder,
        config,
        device=torch.device("cpu"),
        dtype=dtype,
        quantization=quantization,
        kv_cache_bytes=lambda per_token: 1 << 20,
        max_positions=256,
    )


def decode(runner: LlamaRunner, batch: int, steps: int) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy decoding of `batch` prompts of different lengths: (tokens, each step's logits)."""
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    seqs = [make_seq([(5 * i + j) % 97 for j in range(3 + 6 * i)]) for i in range(batch)]
    for seq in seqs:
        manager.allocate(seq, seq.num_tokens + steps)
    history = []
    with torch.inference_mode():
        logits = runner.run(plan_of(*((seq, 0, seq.num_tokens, True) for seq in seqs))).logits
        for _ in range(steps):
            for seq, row in zip(seqs, logits, strict=True):
                seq.output_token_ids.append(int(row.argmax()))
            logits = runner.run(plan_of(*((seq, seq.num_tokens - 1, 1, True) for seq in seqs))).logits
            history.append(logits)
    return [seq.output_token_ids for seq in seqs], history


MODES = [
    (torch.float32, "int4"),
    (torch.float32, "int8"),
    (torch.bfloat16, "int4"),
    (torch.bfloat16, "int8"),
    pytest.param(
        torch.bfloat16,
        "none",
        marks=pytest.mark.skipif(not native.has_bf16_dot(), reason="the CPU lacks AVX512-BF16 (dense kernel)"),
    ),
]


@pytest.mark.parametrize("name", ["llama-tied", "qwen2-bias"])
@pytest.mark.parametrize(("dtype", "quantization"), MODES)
def test_native_decode_matches_the_model_forward(
    name: str, dtype: torch.dtype, quantization: str, tmp_path: Path
) -> None:
    runner = quantised_runner(name, tmp_path, dtype, quantization)
    assert isinstance(runner.decode_path, NativeDecode) and runner.kernel_path == "native"
    native_tokens, native_logits = decode(runner, batch=3, steps=6)
    runner.decode_path = EagerDecode()  # the model's own forward, on the same weights and a fresh cache
    torch_tokens, torch_logits = decode(runner, batch=3, steps=6)
    assert native_tokens == torch_tokens
    for fast, reference in zip(native_logits, torch_logits, strict=True):
        assert float((fast - reference).abs().max()) < 0.01 * float(reference.abs().max())


def test_decoder_is_only_built_for_layers_it_has_kernels_for(tmp_path: Path) -> None:
    dense = quantised_runner("llama-tied", tmp_path / "dense", torch.float32, "none")  # float32 dense: no kernel
    assert isinstance(dense.decode_path, EagerDecode) and dense.kernel_path == "torch"
    assert quantised_runner("llama-tied", tmp_path / "q", torch.float32, "int4").kernel_path == "native"


def test_steps_with_a_prompt_chunk_take_the_model_forward(tmp_path: Path) -> None:
    runner = quantised_runner("llama-tied", tmp_path, torch.float32, "int4")
    assert isinstance(runner.decode_path, NativeDecode)
    decoder = runner.decode_path.decoder
    calls = []
    layered, whole = decoder.__call__, decoder.step
    counting = {
        "__call__": lambda s, *a: calls.append(1) or layered(*a),
        "step": lambda s, *a: calls.append(1) or whole(*a),
    }
    decoder.__class__ = type("Counting", (NativeDecoder,), counting)
    decode(runner, batch=2, steps=2)  # one prompt step, then two decode-only steps
    assert len(calls) == 2


@pytest.mark.parametrize("name", ["llama-tied", "qwen2-bias"])
@pytest.mark.parametrize(("dtype", "quantization"), MODES)
def test_one_call_steps_equal_the_layer_loop_bit_for_bit(
    name: str, dtype: torch.dtype, quantization: str, tmp_path: Path
) -> None:
    """`decode_step` (ids to logits in one call) computes what the layer loop and the Python around it do."""
    runner = quantised_runner(name, tmp_path, dtype, quantization)
    assert isinstance(runner.decode_path, NativeDecode)
    decoder = runner.decode_path.decoder
    assert decoder.whole_step is not None
    whole_tokens, whole_logits = decode(runner, batch=3, steps=6)
    decoder.whole_step = None  # the layer loop, with the embedding, norm and head called from Python
    layered_tokens, layered_logits = decode(runner, batch=3, steps=6)
    assert whole_tokens == layered_tokens
    for whole, layered in zip(whole_logits, layered_logits, strict=True):
        assert torch.equal(whole, layered)


def test_one_call_steps_refuse_ids_outside_the_vocabulary(tmp_path: Path) -> None:
    runner = quantised_runner("llama-tied", tmp_path, torch.bfloat16, "int4")
    assert isinstance(runner.decode_path, NativeDecode)
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    seq = make_seq([1, 2, 3])
    manager.allocate(seq, 8)
    seq.output_token_ids.append(runner.vocab_size)  # one past the last id
    with pytest.raises(ValueError, match="out of range"):
        runner.decode_path.decoder.step(plan_of((seq, seq.num_tokens - 1, 1, True)).chunks)


def test_one_call_steps_refuse_a_position_without_a_cache_block(tmp_path: Path) -> None:
    """Block tables are padded to the longest; a sequence short of its own block must not write into block 0."""
    runner = quantised_runner("llama-tied", tmp_path, torch.bfloat16, "int4")
    assert isinstance(runner.decode_path, NativeDecode)
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    seq = make_seq(list(range(1, BLOCK_SIZE + 1)))
    manager.allocate(seq, BLOCK_SIZE)  # one block: positions 0 .. 15
    seq.output_token_ids.append(7)  # position 16 needs a second block, which was never allocated
    with pytest.raises(ValueError, match="no cache block"):
        runner.decode_path.decoder.step(plan_of((seq, seq.num_tokens - 1, 1, True)).chunks)
