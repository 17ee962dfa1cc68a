"""Decode-only steps of a llama-family model through `decode_layers` (one native call per step).

A decode step at small batch is dozens of small operations per layer, and from Python each pays
microseconds of dispatch, which dominated a small step once the matrix multiplies were native
(docs/engine.md, "Measurements behind the code"). The native loop runs the same computation with the
same roundings (engine/native/decode_layers.cpp). Where the model allows (`NativeModel`: its embedding,
rotary table and final norm in the activations' dtype), a step whose every row is sampled is one call,
`decode_step`, from token ids and block tables to logits: after the layers have streamed the weights
through the caches each tensor op in Python costs tens of µs, and the ~20 that laid out a step and
ran its embedding, norm and head took ~1 ms of a 5 ms step at c = 1 (docs/engine.md, "Per-step
overhead"). Otherwise the embedding lookup and the final norm run here around `decode_layers`, and the
output projection runs on the native dense kernel where it is a plain bfloat16 layer and the step is
small. The layers reach C as `NativeLayer` structures (engine/native/abi.py), built once here.

It applies when the CPU kernels load and the model is bfloat16 or float32 with head_dim a multiple of
32 and the hidden size of 16, with every layer either quantised to native blocks
(`--quantization int4/int8`), kept as a GGUF file's blocks (`--quantization gguf`) or, in bfloat16 on
CPUs with AVX512-BF16, dense; and per step, when the step is decode-only with at most `max_rows`
sequences (the runner checks). Otherwise the model's own forward runs, and the results agree.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence

import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention
from tokenyard.engine.modeling.blockq import BLOCKQ_MAX_ROWS, BlockQLinear
from tokenyard.engine.modeling.kquant import KQuantLinear
from tokenyard.engine.modeling.llama import HeadRows, LlamaModel
from tokenyard.engine.native.abi import (
    LINEAR_DENSE_BF16,
    LINEAR_KQUANT,
    NativeLayer,
    NativeLinear,
    NativeModel,
    NativeShape,
)
from tokenyard.engine.scheduler import ScheduledChunk

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
        self,
        lib: ctypes.CDLL,
        model: LlamaModel,
        attention: PagedAttention,
        layers: list[NativeLayer],
        block_size: int,
    ) -> None:
        self.lib, self.model, self.attention, self.block_size = lib, model, attention, block_size
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
        # A quantised head without bias is called straight, not through the module wrappers around it,
        # for as many rows as its module would give its kernel (beyond, a dense copy runs).
        quantised = isinstance(head, (BlockQLinear, KQuantLinear)) and head.bias is None
        self.quantised_head = head if quantised else None
        self.quantised_head_rows = 0
        if quantised:
            self.quantised_head_rows = head.max_rows if head.dense is not None else sys.maxsize
        # The final norm straight on the kernel where `RMSNorm` itself would take it (same call, same result).
        norm = model.norm
        self.native_norm = norm.weight.dtype == attention.k_cache.dtype and spec.hidden_size % 16 == 0
        self.whole_step = self._whole_step_model()  # None: `decode_step` cannot take this model's steps

    def _whole_step_model(self) -> NativeModel | None:
        """What `decode_step` needs to run a step from ids to logits, where it has everything for it:
        a dense embedding table or a tied head's native blocks, the rotary table and the final norm in the
        activations' dtype; the output projection when it is a quantised layer without bias (a dense
        head stays with `logits`)."""
        model, cache = self.model, self.attention.k_cache
        embedding, rows = None, NativeLinear()
        if isinstance(model.embed_tokens, HeadRows):
            head = _unwrapped(model.lm_head)
            if not isinstance(head, BlockQLinear):
                return None
            rows = NativeLinear(
                head.weights.data_ptr(), head.scales.data_ptr(), head.kind, head.out_features, head.in_features, None
            )
        else:
            table = model.embed_tokens.weight
            if table.dtype != cache.dtype or not table.is_contiguous():
                return None
            embedding = table.data_ptr()
        if not self.native_norm or model.rope.dtype != cache.dtype or not model.rope.is_contiguous():
            return None
        head_linear, head_float = NativeLinear(), 0
        if (quantised := self.quantised_head) is not None:
            head_linear = _native_linear(quantised) or NativeLinear()
            head_float = int(quantised.float_output)
        spec = model.spec
        num_blocks = (cache.shape[2] - 1) // self.block_size  # the cache has one scratch slot past the blocks
        return NativeModel(
            embedding,
            rows,
            spec.vocab_size,
            model.rope.data_ptr(),
            model.rope.shape[0],
            model.norm.weight.data_ptr(),
            head_linear,
            head_float,
            self.block_size,
            num_blocks,
        )

    @classmethod
    def build(cls, model: LlamaModel, attention: PagedAttention, block_size: int) -> NativeDecoder | None:
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
        return cls(lib, model, attention, layers, block_size)

    def step(self, chunks: Sequence[ScheduledChunk]) -> torch.Tensor:
        """Logits [B, V] (float32) of a decode-only step whose every chunk is sampled, in one native call
        (`decode_step`): ids, positions and block tables go in as one integer tensor, so the step costs
        Python three tensor ops instead of some twenty (docs/engine.md, "Per-step overhead")."""
        assert self.whole_step is not None
        block_size, count = self.block_size, len(chunks)
        starts = [chunk.start for chunk in chunks]
        width = max(starts) // block_size + 1  # blocks that hold positions 0 .. start of the longest
        values = [chunk.seq.token_at(chunk.start) for chunk in chunks] + starts
        for chunk in chunks:
            table = chunk.seq.block_table[:width]
            if len(table) <= chunk.start // block_size:  # padding would send its K/V into another's block
                raise ValueError(f"sequence {chunk.seq.request_id} has no cache block for position {chunk.start}")
            values += table
            values += [0] * (width - len(table))  # past a shorter sequence's length: never read
        inputs = torch.tensor(values, dtype=torch.int64)
        address, word = inputs.data_ptr(), inputs.element_size()
        spec = self.model.spec
        hidden = torch.empty(count, spec.hidden_size, dtype=self.attention.k_cache.dtype)
        native_head = self.whole_step.head.weights is not None and count <= self.quantised_head_rows
        logits = torch.empty(count, spec.vocab_size, dtype=torch.float32) if native_head else None
        status = self.lib.decode_step(
            self.bf16,
            self.layers,
            len(self.layers),
            ctypes.byref(self.shape),
            ctypes.byref(self.whole_step),
            address,
            address + count * word,
            address + 2 * count * word,
            width,
            count,
            self.model.norm.eps,
            self.attention.scale,
            hidden.data_ptr(),
            logits.data_ptr() if logits is not None else None,
        )
        if status != 0:
            raise ValueError("a decode step's token id, position or cache block is out of range")
        return logits if logits is not None else self.logits(hidden)

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
        return norm.on_kernel(self.lib, x) if self.native_norm else norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`LlamaModel.compute_logits`, on the native dense kernel for a plain bfloat16 output projection
        and few rows: [N, hidden] -> [N, V] float32."""
        quantised = self.quantised_head
        if quantised is not None and hidden.shape[0] <= self.quantised_head_rows:
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
