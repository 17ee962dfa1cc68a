"""`--quantization gguf` on a real K-quant file: tests/fixtures/tiny-kquant.gguf, a tiny random llama
model quantised by llama.cpp's llama-quantize (scripts/make_kquant_fixture.py; Q4_K, Q5_K, Q6_K and
Q8_0 tensors, fused layers that mix them).

Checks that every layer keeps the file's blocks (decoded here equal to what transformers dequantised
into the converted folder), that the logits stay close to the dequantised model's, and that the native
decode loop and the model's own forward agree on them. Skipped, with the reason, without the kernels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from tests.engine.test_llama import make_seq, plan_of
from tests.engine.test_native_decode import decode
from tokenyard.engine import native
from tokenyard.engine.decode_paths import EagerDecode, NativeDecode
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE, LlamaRunner
from tokenyard.engine.modeling.blockq import BlockQLinear
from tokenyard.engine.modeling.gguf_weights import GGUFTensors
from tokenyard.engine.modeling.kquant import KQuantLinear, decode_kquant
from tokenyard.errors import ModelLoadError
from tokenyard.models import gguf_source, resolve_model

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-kquant.gguf"
REASON = native.unavailable_reason()
needs_native = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_model(str(FIXTURE), tmp_path_factory.mktemp("home")).path


def load(folder: Path, dtype: torch.dtype, quantization: str) -> LlamaRunner:
    return LlamaRunner.load(
        folder,
        AutoConfig.from_pretrained(folder),
        device=torch.device("cpu"),
        dtype=dtype,
        quantization=quantization,
        kv_cache_bytes=lambda per_token: 1 << 20,
        max_positions=256,
    )


def test_the_fixture_holds_every_kept_type(folder: Path) -> None:
    assert gguf_source(folder) == FIXTURE.resolve()
    tensors = GGUFTensors(FIXTURE, heads=4, kv_heads=2)
    types = {name: int(tensor.tensor_type) for name, tensor in tensors.tensors.items() if "norm" not in name}
    assert types == {
        "token_embd.weight": 14,  # Q6_K
        "blk.0.attn_q.weight": 12,  # Q4_K
        "blk.0.attn_k.weight": 12,
        "blk.0.attn_v.weight": 14,
        "blk.0.attn_output.weight": 8,  # Q8_0
        "blk.0.ffn_gate.weight": 12,
        "blk.0.ffn_up.weight": 13,  # Q5_K
        "blk.0.ffn_down.weight": 14,
    }


def test_decoded_rows_equal_the_converted_weights(folder: Path) -> None:
    """Q and K rows put back in Hugging Face's order: every value as transformers dequantised it."""
    converted = load_file(folder / "model.safetensors")
    tensors = GGUFTensors(FIXTURE, heads=4, kv_heads=2)
    for gguf_name, hf_name, heads in [("attn_q", "q_proj", 4), ("attn_k", "k_proj", 2), ("ffn_up", "up_proj", None)]:
        part = tensors.get(f"blk.0.{gguf_name}.weight", heads)
        assert part is not None
        raw, ggml_type = part
        module = "self_attn" if hf_name != "up_proj" else "mlp"
        expected = converted[f"model.layers.0.{module}.{hf_name}.weight"].numpy()
        np.testing.assert_array_equal(decode_kquant(raw, ggml_type).dequantise(), expected)


@needs_native
def test_every_linear_layer_keeps_the_file_blocks(folder: Path) -> None:
    runner = load(folder, torch.float32, "gguf")
    layer = runner.model.layers[0]
    qkv, o, gate_up, down, head = (
        getattr(m, "inner", m)  # the runner wraps each layer in its thread budget (modeling/threads.py)
        for m in (
            layer.self_attn.qkv_proj,
            layer.self_attn.o_proj,
            layer.mlp.gate_up_proj,
            layer.mlp.down_proj,
            runner.model.lm_head,
        )
    )
    assert isinstance(qkv, KQuantLinear) and qkv.types == ["Q4_K", "Q6_K"]
    assert isinstance(gate_up, KQuantLinear) and gate_up.types == ["Q4_K", "Q5_K"]
    assert isinstance(down, KQuantLinear) and down.types == ["Q6_K"]
    assert isinstance(o, BlockQLinear) and o.bits == 8
    assert isinstance(head, KQuantLinear) and head.types == ["Q6_K"]
    assert all(m.dense is None for m in runner.model.modules() if isinstance(m, KQuantLinear | BlockQLinear))


def forced(runner: LlamaRunner, steps: int) -> list[torch.Tensor]:
    """Logits of 3 prompts' prefill, then of `steps` decode steps fed fixed tokens (the same for any runner)."""
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    seqs = [make_seq([(7 * i + j) % 397 for j in range(5 + 9 * i)]) for i in range(3)]
    for seq in seqs:
        manager.allocate(seq, seq.num_tokens + steps)
    with torch.inference_mode():
        logits = [runner.run(plan_of(*((seq, 0, seq.num_tokens, True) for seq in seqs))).logits]
        for step in range(steps):
            for i, seq in enumerate(seqs):
                seq.output_token_ids.append((31 * step + 11 * i) % 397)
            logits.append(runner.run(plan_of(*((seq, seq.num_tokens - 1, 1, True) for seq in seqs))).logits)
    return logits


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_follow_the_dequantised_model(folder: Path, dtype: torch.dtype) -> None:
    ours = forced(load(folder, dtype, "gguf"), steps=3)
    dense = forced(load(folder, torch.float32, "none"), steps=3)
    for a, b in zip(ours, dense, strict=True):
        # int8 activations (per 256 or 32 channels) against exact ones: about 0.4% of the logits' spread
        assert (a.float() - b).abs().max() <= 0.015 * (b.max() - b.min())


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_native_decode_loop_runs_the_kquant_layers(folder: Path, dtype: torch.dtype) -> None:
    runner = load(folder, dtype, "gguf")
    assert isinstance(runner.decode_path, NativeDecode)
    native_tokens, native_logits = decode(runner, batch=3, steps=5)
    runner.decode_path = EagerDecode()  # the model's own forward
    torch_tokens, torch_logits = decode(runner, batch=3, steps=5)
    assert native_tokens == torch_tokens
    for a, b in zip(native_logits, torch_logits, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3 * float(b.abs().max()))


@needs_native
def test_a_folder_not_from_a_gguf_file_is_refused(tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_chat_model

    folder = make_tiny_chat_model(tmp_path / "hf")
    with pytest.raises(ModelLoadError, match=r"needs a model converted from a \.gguf file"):
        load(folder, torch.float32, "gguf")


@needs_native
def test_blocks_that_do_not_match_the_weights_are_refused(folder: Path, tmp_path: Path) -> None:
    """As if Q/K rows were in an order this code does not know: the start fails instead of answering nonsense."""
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    tensors = load_file(changed / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"].flip(0)
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="do not match"):
        load(changed, torch.float32, "gguf")
