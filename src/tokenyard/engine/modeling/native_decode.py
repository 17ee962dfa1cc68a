"""Decode-only steps of a quantised llama-family model through `decode_layers` (one native call).

A decode step at small batch is ~30 small operations per layer; from Python each costs microseconds of
dispatch, which was half of a batch-1 step of SmolLM2 once the matrix multiplies were native. The
native loop runs the same computation with the same roundings (engine/native/decode_layers.cpp); the
embedding lookup, the final norm and the output projection stay here (once per step).

It applies when the CPU kernels load, the model is bfloat16 or float32 with every layer quantised to
native blocks (`--quantization int4/int8`), head_dim is a multiple of 32 and the hidden size of 16;
and per step, when the step is decode-only with at most `max_rows` sequences. Otherwise the model's
own forward runs, so each step takes whichever path is faster and the results agree.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention
from tokenyard.engine.modeling.blockq import BLOCKQ_MAX_ROWS, BlockQLinear
from tokenyard.engine.modeling.llama import LlamaModel


def _unwrapped(module: nn.Module) -> nn.Module:
    return getattr(module, "inner", module)  # ThreadedLinear wraps the layer it runs


def _linear_fields(module: nn.Module) -> list[int] | None:
    layer = _unwrapped(module)
    if not isinstance(layer, BlockQLinear):
        return None
    bias = layer.bias.data_ptr() if layer.bias is not None else 0
    return [layer.weights.data_ptr(), layer.scales.data_ptr(), layer.bits, layer.out_features, layer.in_features, bias]


class NativeDecoder:
    """The decoder layers of `model` for decode-only steps, as one native call per step."""

    max_rows = BLOCKQ_MAX_ROWS  # beyond this the dense weights (model forward) are faster

    def __init__(self, lib: ctypes.CDLL, model: LlamaModel, attention: PagedAttention, table: torch.Tensor) -> None:
        self.lib, self.model, self.attention = lib, model, attention
        self.table = table  # [layers, fields] int64: pointers into `model` and the cache, which outlive it
        spec = model.spec
        num_slots = attention.k_cache.shape[2]
        shape = [spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.intermediate_size, num_slots]
        self.shape = torch.tensor(shape, dtype=torch.int64)
        self.bf16 = int(attention.k_cache.dtype == torch.bfloat16)

    @classmethod
    def build(cls, model: LlamaModel, attention: PagedAttention) -> NativeDecoder | None:
        """The decoder where every condition holds (see the module's docstring), else None."""
        spec, cache = model.spec, attention.k_cache
        lib = native.kernels()
        if lib is None or attention.native is None or cache.dtype not in (torch.bfloat16, torch.float32):
            return None
        if spec.head_dim % 32 or spec.hidden_size % 16 or model.embed_tokens.weight.dtype != cache.dtype:
            return None
        rows = []
        for index, layer in enumerate(model.layers):
            linears = [layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj]
            fields = [_linear_fields(linear) for linear in linears]
            if any(field is None for field in fields):
                return None
            row = [layer.input_layernorm.weight.data_ptr(), layer.post_attention_layernorm.weight.data_ptr()]
            for field in fields:
                row += field or []
            rows.append([*row, cache[index].data_ptr(), attention.v_cache[index].data_ptr()])
        return cls(lib, model, attention, torch.tensor(rows, dtype=torch.int64))

    def fits(self, meta: AttentionMetadata) -> bool:
        """Whether a step with this metadata can run here: decode-only, few enough rows, native attention."""
        return not meta.prefills and meta.decode_lengths is not None and 0 < meta.num_decode <= self.max_rows

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
