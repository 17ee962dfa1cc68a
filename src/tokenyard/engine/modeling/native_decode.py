"""Decode-only steps of a llama-family model through `decode_layers` (one native call per step).

A decode step at small batch is dozens of small operations per layer, and from Python each pays
microseconds of dispatch, which dominated a small step once the matrix multiplies were native
(docs/engine.md, "Measurements behind the code"). The native loop runs the same computation with the
same roundings (engine/native/decode_layers.cpp); the embedding lookup and the final norm stay here,
and the output projection runs on the native dense kernel where it is a plain bfloat16 layer and the
step is small. The layers reach C as `NativeLayer` structures (engine/native/abi.py), built once here.

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
from tokenyard.engine.modeling.kquant import KQuantLinear
from tokenyard.engine.modeling.llama import LlamaModel
from tokenyard.engine.native.abi import LINEAR_DENSE_BF16, LINEAR_KQUANT, NativeLayer, NativeLinear, NativeShape

DENSE_MAX_ROWS = 16  # beyond this torch's bfloat16 matmul is as fast as the dense kernel
DENSE_OUTPUT_MAX_ROWS = 8  # the output projection's own crossover: it is far wider than the layers


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


def _native_linear(module: nn.Module) -> NativeLinear | None:
    """The layer as decode_layers.cpp reads it, or None if that has no kernel for it."""
    layer = _unwrapped(module)
    bias = layer.bias.data_ptr() if getattr(layer, "bias", None) is not None else None
    n, k = layer.out_features, layer.in_features
    if isinstance(layer, BlockQLinear):  # the kind is the bit count, with the activations' flag
        return NativeLinear(layer.weights.data_ptr(), layer.scales.data_ptr(), layer.kind, n, k, bias)
    if isinstance(layer, KQuantLinear):  # the tile table where block layers have their scales
        return NativeLinear(layer.weights.data_ptr(), layer.tiles.data_ptr(), LINEAR_KQUANT, n, k, bias)
    if isinstance(layer, nn.Linear) and _dense_bf16(layer):
        return NativeLinear(layer.weight.data_ptr(), None, LINEAR_DENSE_BF16, n, k, bias)
    return None


class NativeDecoder:
    """The decoder layers of `model` for decode-only steps, as one native call per step."""

    def __init__(
        self, lib: ctypes.CDLL, model: LlamaModel, attention: PagedAttention, layers: list[NativeLayer]
    ) -> None:
        self.lib, self.model, self.attention = lib, model, attention
        # pointers into `model` and the cache, which outlive this table
        self.layers = (NativeLayer * len(layers))(*layers)
        spec = model.spec
        num_slots = attention.k_cache.shape[2]
        self.shape = NativeShape(
            spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.intermediate_size, num_slots
        )
        self.bf16 = int(attention.k_cache.dtype == torch.bfloat16)
        dense = any(linear.kind == LINEAR_DENSE_BF16 for layer in layers for linear in _linears(layer))
        self.max_rows = DENSE_MAX_ROWS if dense else BLOCKQ_MAX_ROWS  # decode rows a step may have to run here
        head = _unwrapped(model.lm_head)
        self.dense_head = head if _dense_bf16(head) else None
        # A quantised head without bias is called straight, not through the module wrappers around it.
        quantised = isinstance(head, (BlockQLinear, KQuantLinear)) and head.bias is None
        self.quantised_head = head if quantised else None
        # The final norm straight on the kernel where `RMSNorm` itself would take it (same call, same result).
        norm = model.norm
        self.native_norm = norm.weight.dtype == attention.k_cache.dtype and spec.hidden_size % 16 == 0

    @classmethod
    def build(cls, model: LlamaModel, attention: PagedAttention) -> NativeDecoder | None:
        """The decoder where every condition holds (see the module's docstring), else None."""
        spec, cache, lib = model.spec, attention.k_cache, attention.native  # the library, where attention runs on it
        if lib is None or cache.dtype not in (torch.bfloat16, torch.float32):
            return None
        if spec.head_dim % 32 or spec.hidden_size % 16 or model.embed_tokens.weight.dtype != cache.dtype:
            return None
        layers = []
        for index, layer in enumerate(model.layers):
            modules = [layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj]
            qkv, o, gate_up, down = (_native_linear(module) for module in modules)
            if qkv is None or o is None or gate_up is None or down is None:
                return None
            norms = layer.input_layernorm.weight.data_ptr(), layer.post_attention_layernorm.weight.data_ptr()
            caches = cache[index].data_ptr(), attention.v_cache[index].data_ptr()
            layers.append(NativeLayer(*norms, qkv, o, gate_up, down, *caches))
        return cls(lib, model, attention, layers)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Hidden states after the final norm, as `LlamaModel.forward` returns them: [T] -> [T, hidden]."""
        assert meta.decode_slots is not None and meta.decode_lengths is not None
        model = self.model
        x = model.embed_tokens(input_ids).contiguous()  # [T, hidden], overwritten layer by layer
        cos_sin = model.rope[positions].contiguous()  # [T, 2, D]
        slots = meta.decode_slots.contiguous()
        self.lib.decode_layers(
            self.bf16,
            self.layers,
            len(self.layers),
            ctypes.byref(self.shape),
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
        return self._final_norm(x)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """`model.norm(x)` on the same kernel, without the module call: after a step's layers every
        Python op runs with cold caches, so each one a decode step skips is worth tens of µs."""
        norm = self.model.norm
        if not self.native_norm:
            return norm(x)
        out = torch.empty_like(x)
        hidden = x.shape[-1]
        self.lib.rms_norm(self.bf16, x.data_ptr(), norm.weight.data_ptr(), x.shape[0], hidden, norm.eps, out.data_ptr())
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`LlamaModel.compute_logits`, on the native dense kernel for a plain bfloat16 output projection
        and few rows: [N, hidden] -> [N, V] float32."""
        quantised = self.quantised_head
        if quantised is not None and (quantised.dense is None or hidden.shape[0] <= quantised.max_rows):
            logits = quantised.quantised_mm(hidden)  # what the module would run, as `compute_logits` returns it
            return logits if logits.dtype == torch.float32 else logits.float()
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


def _linears(layer: NativeLayer) -> tuple[NativeLinear, ...]:
    return layer.qkv, layer.o, layer.gate_up, layer.down
