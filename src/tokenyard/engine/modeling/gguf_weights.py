"""`--quantization gguf`: a GGUF model's linear layers at the file's own precision.

A GGUF file is converted once to a safetensors folder (`models/gguf_conversion.py`), dequantised; the folder
records which file it came from (`models.gguf_source`). In this mode the loader reads each linear
layer's blocks straight from that file and keeps them as they are:
- K-quants (Q4_K, Q5_K, Q6_K) on the K-quant kernel (`kquant.py`, `native/kquant.cpp`);
- the 32-channel block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) on the block kernel (`blockq.py`), whose
  w = d u + m with float16 d and m holds every one of them exactly: Q4_0/Q4_1 as 4-bit blocks, and
  any fused layer with a 5- or 8-bit part as 8-bit ones (Q5_0: u = q, m = -16 d; Q8_0: u = q + 128,
  m = -128 d), with activations in one int8 part per block as llama.cpp quantises them for the type
  (Q8_0, or Q8_1 for Q4_1 and Q5_1). K-quant files have these too: llama-quantize falls back to
  Q5_0/Q5_1/Q8_0 for rows whose length is not a multiple of 256 (all but the MLP's down projection of
  SmolLM2-135M);
- anything else (float tensors, Q2_K, Q3_K, the IQ types, a fused layer that mixes K-quants with
  32-channel blocks) stays the dense layer the folder holds, and the start-up log counts them.
No dense copy is kept: every step, prompt chunks included, multiplies the file's own weights, as
llama.cpp does. llama.cpp's converter reorders the rows of Q and K for its rotary layout
(`convert_hf_to_gguf.py`, `LlamaModel.permute`); they are put back here, and each layer's first rows
are checked against the folder's dequantised weights, so a layout this code does not know fails
loudly instead of answering nonsense.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.blockq import BlockQLinear, blockq_fits
from tokenyard.engine.modeling.kquant import KQUANT_TYPES, KQuantLinear, decode_kquant, kquant_fits
from tokenyard.engine.modeling.llama import LlamaModel
from tokenyard.errors import ModelLoadError
from tokenyard.models import gguf_source

logger = logging.getLogger(__name__)

Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 2, 3, 6, 7, 8  # ggml's type numbers
BLOCK32_TYPES = {Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1", Q8_0: "Q8_0"}
PERMUTED_ARCHITECTURES = ("llama",)  # whose Q/K rows llama.cpp's converter reorders
Blocks32 = tuple[np.ndarray, np.ndarray, np.ndarray]  # u [N, K] uint8, d and m [N, K/32] float32


def decode_block32(raw: np.ndarray, ggml_type: int) -> Blocks32:
    """raw [N, K/32 * block bytes] of a 32-channel block type -> (u, d, m) with w = d u + m exactly."""
    n = raw.shape[0]
    size = {Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q8_0: 34}[ggml_type]
    blocks = raw.reshape(n, -1, size)
    d = blocks[..., 0:2].view(np.float16)[..., 0].astype(np.float32)
    if ggml_type == Q8_0:
        return (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8).reshape(n, -1), d, -128 * d
    with_min = ggml_type in (Q4_1, Q5_1)
    m = blocks[..., 2:4].view(np.float16)[..., 0].astype(np.float32) if with_min else None
    start = 4 if with_min else 2
    if ggml_type in (Q5_0, Q5_1):  # a 32-bit word of fifth bits (bit i for channel i), then the nibbles
        high = blocks[..., start : start + 4].copy().view("<u4")  # [N, B, 1]
        start += 4
    nibbles = blocks[..., start : start + 16]  # channel i in byte i's low nibble, 16 + i in its high one
    u = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)  # [N, B, 32]
    if ggml_type in (Q5_0, Q5_1):
        u = u | (((high >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4)
    offset = {Q4_0: -8.0, Q5_0: -16.0}.get(ggml_type, 0.0)
    return u.reshape(n, -1), d, m if m is not None else offset * d


def dequantise_block32(blocks: Blocks32) -> np.ndarray:
    u, d, m = blocks
    n, k = u.shape
    return (d[..., None] * u.reshape(n, -1, 32).astype(np.float32) + m[..., None]).reshape(n, k)


class GGUFTensors:
    """The raw rows and types of a GGUF file's tensors, under Hugging Face llama names."""

    def __init__(self, path: Path, heads: int, kv_heads: int) -> None:
        import gguf

        if not path.is_file():
            raise ModelLoadError(f"--quantization gguf reads {path}, which is gone; convert the model again")
        reader = gguf.GGUFReader(path)
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode()
        self.permuted = architecture in PERMUTED_ARCHITECTURES
        self.heads, self.kv_heads = heads, kv_heads
        self.tensors = {tensor.name: tensor for tensor in reader.tensors}

    def get(self, name: str, heads: int | None = None) -> tuple[np.ndarray, int] | None:
        """(raw rows [N, bytes], ggml type) of a GGUF tensor, its rows in Hugging Face's order."""
        tensor = self.tensors.get(name)
        if tensor is None:
            return None
        raw = np.asarray(tensor.data).view(np.uint8).reshape(int(tensor.shape[-1]), -1)
        if heads is not None and self.permuted:  # llama.cpp stores row (h, i, s) for HF's (h, s, i)
            dim = raw.shape[0] // heads
            order = np.arange(raw.shape[0]).reshape(heads, dim // 2, 2).transpose(0, 2, 1).reshape(-1)
            raw = raw[order]
        return raw, int(tensor.tensor_type)


def load_gguf_linears(model: LlamaModel, folder: Path) -> None:
    """`--quantization gguf` for a model loaded from `folder`: its file's own blocks, or a clear error."""
    source = gguf_source(folder)
    if source is None:
        raise ModelLoadError("--quantization gguf needs a model converted from a .gguf file; use int8, int4 or none")
    reason = native.unavailable_reason()
    if reason is not None or native.kernels() is None:
        raise ModelLoadError(f"--quantization gguf needs the native CPU kernels ({reason or 'build failed'}); use none")
    counts = use_gguf_weights(model, source)
    logger.info("linear layers from %s: %s", source.name, describe(counts))


def use_gguf_weights(model: LlamaModel, gguf: Path, *, check: bool = True) -> Counter[str]:
    """Replace `model`'s linear layers by ones on the file's own blocks; return a count per kind."""
    spec = model.spec
    source = GGUFTensors(gguf, spec.num_heads, spec.num_kv_heads)
    counts: Counter[str] = Counter()
    for i, layer in enumerate(model.layers):
        attn, mlp, b = layer.self_attn, layer.mlp, f"blk.{i}."
        qkv = [source.get(b + "attn_q.weight", spec.num_heads), source.get(b + "attn_k.weight", spec.num_kv_heads)]
        qkv.append(source.get(b + "attn_v.weight"))
        attn.qkv_proj = _replaced(attn.qkv_proj, qkv, counts, check)
        attn.o_proj = _replaced(attn.o_proj, [source.get(b + "attn_output.weight")], counts, check)
        gate_up = [source.get(b + "ffn_gate.weight"), source.get(b + "ffn_up.weight")]
        mlp.gate_up_proj = _replaced(mlp.gate_up_proj, gate_up, counts, check)
        mlp.down_proj = _replaced(mlp.down_proj, [source.get(b + "ffn_down.weight")], counts, check)
    head = source.get("output.weight") or source.get("token_embd.weight")
    model.lm_head = _replaced(model.lm_head, [head], counts, check, float_output=True)
    model.embed_from_head()  # tied weights on 32-channel blocks: the embedding reads the head's rows
    return counts


def _replaced(
    linear: nn.Module,
    parts: list[tuple[np.ndarray, int] | None],
    counts: Counter[str],
    check: bool,
    *,
    float_output: bool = False,
) -> nn.Module:
    """The layer on the parts' blocks, or `linear` itself where no kernel holds them exactly."""
    present = [part for part in parts if part is not None]
    if not isinstance(linear, nn.Linear) or len(present) < len(parts):
        counts["dense"] += 1
        return linear
    types = {ggml_type for _, ggml_type in present}
    if types <= set(KQUANT_TYPES) and kquant_fits(linear.in_features, linear.out_features):
        blocks = [decode_kquant(raw, ggml_type) for raw, ggml_type in present]
        if all(block.q.shape[0] % 16 == 0 for block in blocks):
            _check(linear, blocks[0].dequantise(), check)
            counts.update(KQUANT_TYPES[ggml_type] for _, ggml_type in present)
            return KQuantLinear(linear, blocks, float_output=float_output)
    if types <= set(BLOCK32_TYPES) and blockq_fits(linear):
        decoded = [decode_block32(raw, ggml_type) for raw, ggml_type in present]
        _check(linear, dequantise_block32(decoded[0]), check)
        u, d, m = (np.concatenate([part[j] for part in decoded]) for j in range(3))
        counts.update(BLOCK32_TYPES[ggml_type] for _, ggml_type in present)
        bits = 4 if types <= {Q4_0, Q4_1} else 8
        blocks32 = (torch.from_numpy(u.astype(np.int32)), torch.from_numpy(d), torch.from_numpy(m))
        # llama.cpp's activations for each part's type: Q8_1 for those with a min, Q8_0 for the others
        q8_1 = torch.cat([torch.full((raw.shape[0],), t in (Q4_1, Q5_1)) for raw, t in present])
        return BlockQLinear(linear, bits, dense=False, float_output=float_output, blocks=blocks32, q8_1_rows=q8_1)
    counts["dense"] += 1
    return linear


def _check(linear: nn.Linear, first_part: np.ndarray, check: bool) -> None:
    """The first 16 rows decoded here against the folder's dequantised weights (in the model's dtype)."""
    if not check:
        return
    dense = linear.weight.detach()[:16].float()
    ours = torch.from_numpy(first_part[:16]).to(linear.weight.dtype).float()
    if not torch.allclose(ours, dense, rtol=1e-2, atol=1e-6):
        raise ModelLoadError("the GGUF file's blocks do not match its converted weights; convert the model again")


def describe(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
