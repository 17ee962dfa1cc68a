"""Decode-only steps of a llama-family model through `decode_layers` (one native call per step).

A decode step at small batch is ~30 small operations per layer; from Python each costs microseconds of
dispatch, which was half of a batch-1 step of SmolLM2 once the matrix multiplies were native. The
native loop runs the same computation with the same roundings (engine/native/decode_layers.cpp); the
embedding lookup and the final norm stay here, and the output projection runs on the native dense
kernel where it is a plain bfloat16 layer and the step is small.

It applies when the CPU kernels load and the model is bfloat16 or float32 with head_dim a multiple of
32 and the hidden size of 16, with every layer either quantised to native blocks
(`--quantization int4/int8`), kept as a GGUF file's blocks (`--quantization gguf`) or, in bfloat16 on
CPUs with AVX512-BF16, dense; and per step, when the step is decode-only with at most `max_rows`
sequences (the runner checks). Otherwise the model's own forward runs, and the results agree.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention
from tokenyard.engine.modeling.blockq import BLOCKQ_MAX_ROWS, BlockQLinear
from tokenyard.engine.modeling.kquant import KQUANT_CODE, KQuantLinear
from tokenyard.engine.modeling.llama import LlamaModel

DENSE_MAX_ROWS = 16  # the native dense kernel ties torch's bfloat16 matmul at 16 rows and loses beyond
DENSE_OUTPUT_MAX_ROWS = 8  # the output projection (49,152 rows for SmolLM2): 2.5 against 6.9 ms at 1 row


def _unwrapped(module: nn.Module) -> nn.Module:
    return getattr(module, "inner", module)  # ThreadedLinear wraps the layer it runs


def _dense_bf16(layer: nn.Module) -> bool:
    """A plain bfloat16 linear layer the dense kernel can take (on a CPU that has AVX512-BF16)."""
    return (
        type(layer) is nn.Linear
        and layer.weight.dtype == torch.bfloat16
        and layer.in_features % 32 == 0
        and layer.weight.is_contiguous()
        and native.has_bf16_dot()
    )


def _linear_fields(module: nn.Module) -> list[int] | None:
    """The 6 values decode_layers.cpp reads for a linear layer, or None if it cannot run it."""
    layer = _unwrapped(module)
    bias = layer.bias.data_ptr() if getattr(layer, "bias", None) is not None else 0
    if isinstance(layer, BlockQLinear):
        return [
            layer.weights.data_ptr(),
            layer.scales.data_ptr(),
            layer.bits,
            layer.out_features,
            layer.in_features,
            bias,
        ]
    if isinstance(layer, KQuantLinear):  # the tile table where block layers have their scales
        return [
            layer.weights.data_ptr(),
            layer.tiles.data_ptr(),
            KQUANT_CODE,
            layer.out_features,
            layer.in_features,
            bias,
        ]
    if isinstance(layer, nn.Linear) and _dense_bf16(layer):
        return [layer.weight.data_ptr(), 0, 16, layer.out_features, layer.in_features, bias]
    return None


class NativeDecoder:
    """The decoder layers of `model` for decode-only steps, as one native call per step."""

    def __init__(
        self, lib: ctypes.CDLL, model: LlamaModel, attention: PagedAttention, table: torch.Tensor, max_rows: int
    ) -> None:
        self.lib, self.model, self.attention = lib, model, attention
        self.table = table  # [layers, fields] int64: pointers into `model` and the cache, which outlive it
        self.max_rows = max_rows
        spec = model.spec
        num_slots = attention.k_cache.shape[2]
        shape = [spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.intermediate_size, num_slots]
        self.shape = torch.tensor(shape, dtype=torch.int64)
        self.bf16 = int(attention.k_cache.dtype == torch.bfloat16)
        head = _unwrapped(model.lm_head)
        self.dense_head = head if _dense_bf16(head) else None

    @classmethod
    def build(cls, model: LlamaModel, attention: PagedAttention) -> NativeDecoder | None:
        """The decoder where every condition holds (see the module's docstring), else None."""
        spec, cache, lib = model.spec, attention.k_cache, attention.native  # the library, where attention runs on it
        if lib is None or cache.dtype not in (torch.bfloat16, torch.float32):
            return None
        if spec.head_dim % 32 or spec.hidden_size % 16 or model.embed_tokens.weight.dtype != cache.dtype:
            return None
        rows, dense = [], False
        for index, layer in enumerate(model.layers):
            linears = [layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj]
            fields = [_linear_fields(linear) for linear in linears]
            if any(field is None for field in fields):
                return None
            row = [layer.input_layernorm.weight.data_ptr(), layer.post_attention_layernorm.weight.data_ptr()]
            for field in fields:
                row += field or []
                dense = dense or (field or [0, 0, 0])[2] == 16
            rows.append([*row, cache[index].data_ptr(), attention.v_cache[index].data_ptr()])
        max_rows = DENSE_MAX_ROWS if dense else BLOCKQ_MAX_ROWS
        return cls(lib, model, attention, torch.tensor(rows, dtype=torch.int64), max_rows)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Hidden states after the final norm, as `LlamaModel.forward` returns them: [T] -> [T, hidden]."""
        assert meta.decode_slots is not None and meta.decode_lengths is not None
        model = self.model
        x = model.embed_tokens(input_ids).contiguous()  # [T, hidden], overwritten layer by layer
        cos_sin = model.rope[positions].contiguous()  # [T, 2, D]
        slots = meta.decode_slots.contiguous()
        self.lib.decode_layers(
            self.bf16,
            self.table.data_ptr(),
            self.table.shape[0],
            self.shape.data_ptr(),
            x.data_ptr(),
            x.shape[0],
            cos_sin.data_ptr(),
            meta.slot_mapping.data_ptr(),
            slots.data_ptr(),
            slots.shape[1],
            meta.decode_lengths.data_ptr(),
            model.norm.eps,
            self.attention.scale,
        )
        return model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`LlamaModel.compute_logits`, on the native dense kernel for a plain bfloat16 output projection
        and few rows: [N, hidden] -> [N, V] float32."""
        head = self.dense_head
        if head is None or hidden.shape[0] > DENSE_OUTPUT_MAX_ROWS or hidden.dtype != torch.bfloat16:
            return self.model.compute_logits(hidden)
        hidden = hidden.contiguous()
        out = torch.empty(hidden.shape[0], head.out_features, dtype=torch.float32)
        self.lib.dense_bf16_linear(
            head.weight.data_ptr(),
            head.out_features,
            head.in_features,
            hidden.data_ptr(),
            hidden.shape[0],
            out.data_ptr(),
            0,
        )
        return out if head.bias is None else out + head.bias
