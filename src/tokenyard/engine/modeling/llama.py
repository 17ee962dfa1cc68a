"""The llama family (Llama 2/3, Mistral, Qwen2, SmolLM) for batched decode over a paged KV cache.

After gpt-fast and nano-vllm: the model runs on a flat batch of tokens [T] from many sequences at
once (prefill chunks and decode tokens together), so every linear layer is one matmul for the whole
step; only attention needs to know which token belongs to which sequence, and it asks the
`Attention` backend it is given (see `modeling.attention`). Q/K/V and gate/up projections are fused
into one matmul each to halve the number of kernel launches per layer, which dominates at batch 1.
Rotary embeddings follow Hugging Face's (non-interleaved) layout, with `rope_theta` and the
"linear" and "llama3" scalings; Qwen2's Q/K/V biases and tied embeddings are honoured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from tokenyard.engine import native

LLAMA_FAMILY = {"llama", "mistral", "qwen2"}
SUPPORTED_ROPE = {"default", "linear", "llama3"}


class AttentionBackend(Protocol):
    """Writes a layer's new K/V to the cache and attends each token to its own sequence's past."""

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class LlamaSpec:
    """The architecture numbers the model code needs, read from a Hugging Face config."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: dict[str, Any]
    qkv_bias: bool
    tie_word_embeddings: bool
    max_position_embeddings: int

    @classmethod
    def supports(cls, config: Any) -> bool:
        rope = _rope_parameters(config)
        return config.model_type in LLAMA_FAMILY and rope.get("rope_type", "default") in SUPPORTED_ROPE

    @classmethod
    def from_config(cls, config: Any) -> LlamaSpec:
        heads = config.num_attention_heads
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rms_norm_eps=config.rms_norm_eps,
            rope=_rope_parameters(config),
            qkv_bias=config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
            tie_word_embeddings=bool(config.tie_word_embeddings),
            max_position_embeddings=config.max_position_embeddings,
        )


def _rope_parameters(config: Any) -> dict[str, Any]:
    """transformers 5 keeps theta and scaling in `rope_parameters`; older configs in two fields."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def rope_inverse_frequencies(head_dim: int, rope: dict[str, Any]) -> torch.Tensor:
    """Per-pair rotation speeds [head_dim / 2], with linear or Llama-3 scaling when configured."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim  # see rope_table
    inv_freq = 1.0 / (rope["rope_theta"] ** exponents)
    kind = rope["rope_type"]
    if kind == "linear":
        return (inv_freq / rope["factor"]).float()
    if kind != "llama3":
        return inv_freq.float()
    # Llama 3.1: slow (long-wavelength) frequencies are divided by `factor`, fast ones kept, a blend between.
    factor, old_context = rope["factor"], rope["original_max_position_embeddings"]
    low_wavelen = old_context / rope["low_freq_factor"]
    high_wavelen = old_context / rope["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - rope["low_freq_factor"]) / (rope["high_freq_factor"] - rope["low_freq_factor"])
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled).float()


def rope_table(spec: LlamaSpec, length: int) -> torch.Tensor:
    """cos and sin for every position: [length, 2, head_dim], float32, on the CPU.

    On the CPU whatever the default device: `LlamaRunner.load` builds the model on the meta device, where
    `arange` runs through torch._refs, which imports torch._dynamo and sympy (~72 MiB a worker would then
    hold for nothing; docs/engine.md, "Sizing memory")."""
    inv_freq = rope_inverse_frequencies(spec.head_dim, spec.rope)  # [D/2]
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device="cpu"), inv_freq)  # [L, D/2]
    angles = torch.cat([angles, angles], dim=-1)  # [L, D], Hugging Face's rotate-half layout
    return torch.stack([angles.cos(), angles.sin()], dim=1)  # [L, 2, D]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [T, H, D]; cos, sin: [T, 1, D]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 as the reference implementation does."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, H]. Normalised in float32 and rounded before the weight, exactly as the reference does:
        # the fused kernel with the weight inside rounds differently, enough to flip greedy near-ties
        # of a 135M model in bfloat16 (SmolLM2 then answered the Paris question wrongly).
        fits = x.device.type == "cpu" and x.dtype == self.weight.dtype and x.shape[-1] % 16 == 0
        if fits and x.dtype in (torch.bfloat16, torch.float32) and (lib := native.kernels()) is not None:
            return self.on_kernel(lib, x.contiguous())
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)

    def on_kernel(self, lib: Any, x: torch.Tensor) -> torch.Tensor:
        """The same rounding in one call (engine/native/norm.cpp): torch's four ops took 36 µs at batch 1.
        x: contiguous, in the weight's dtype (bfloat16 or float32), hidden a multiple of 16."""
        out = torch.empty_like(x)
        hidden = x.shape[-1]
        bf16 = int(x.dtype == torch.bfloat16)
        lib.rms_norm(bf16, x.data_ptr(), self.weight.data_ptr(), x.numel() // hidden, hidden, self.eps, out.data_ptr())
        return out


class LlamaAttention(nn.Module):
    def __init__(self, spec: LlamaSpec, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.q_size, self.kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        self.qkv_proj: nn.Module = nn.Linear(spec.hidden_size, self.q_size + 2 * self.kv_size, bias=spec.qkv_bias)
        self.o_proj: nn.Module = nn.Linear(self.q_size, spec.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: AttentionBackend
    ) -> torch.Tensor:
        # x: [T, hidden]
        qk, v = self.qkv_proj(x).split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        # Rotating queries and keys together halves the small ops per layer (they dominate at batch 1).
        qk = apply_rope(qk.view(-1, self.num_heads + self.num_kv_heads, self.head_dim), cos, sin)  # [T, H+Hkv, D]
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)  # [T, H, D], [T, Hkv, D]
        out = attention(self.layer, q, k, v.view(-1, self.num_kv_heads, self.head_dim))  # [T, H, D]
        return self.o_proj(out.reshape(-1, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, spec: LlamaSpec) -> None:
        super().__init__()
        self.intermediate = spec.intermediate_size
        self.gate_up_proj: nn.Module = nn.Linear(spec.hidden_size, 2 * spec.intermediate_size, bias=False)
        self.down_proj: nn.Module = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate, dim=-1)  # [T, I] each
        return self.down_proj(F.silu(gate) * up)


class LlamaLayer(nn.Module):
    def __init__(self, spec: LlamaSpec, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.self_attn = LlamaAttention(spec, layer)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = LlamaMLP(spec)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: AttentionBackend
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention)
        return x + self.mlp(self.post_attention_layernorm(x))


class HeadRows(nn.Module):
    """The token embedding of a model with tied weights, read from its quantised output projection.

    Tied weights are one matrix [vocab, hidden] (SmolLM2: 49,152 x 576). Once the output projection
    holds it as native blocks, a table beside it would hold it twice (in bfloat16, 54 MiB for SmolLM2);
    a lookup dequantises only the rows it is asked for instead, as llama.cpp's `get_rows` reads a
    quantised embedding. The rows are the projection's values rounded to the model's dtype.
    """

    def __init__(self, rows_of: Callable[[torch.Tensor, torch.dtype], torch.Tensor], table: torch.Tensor) -> None:
        """rows_of: (ids [R], dtype) -> rows [R, hidden] (`BlockQLinear.dequantise_rows`); table: the dropped table."""
        super().__init__()
        self.rows_of = rows_of
        # The table's shape and dtype without its data (a meta tensor, not a parameter: it holds nothing),
        # for code that asks what the embedding holds (the native decoder checks its dtype).
        self.weight = torch.empty(table.shape, dtype=table.dtype, device="meta")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.rows_of(input_ids, self.weight.dtype)  # [T] -> [T, hidden]


class LlamaModel(nn.Module):
    """Embeddings, decoder layers, final norm and the output projection (tied or not)."""

    def __init__(self, spec: LlamaSpec, max_positions: int) -> None:
        super().__init__()
        self.spec = spec
        # An uninitialised table (the checkpoint fills it): nn.Embedding's own random init on the meta
        # device would import torch._dynamo, as `rope_table` explains.
        table = torch.empty(spec.vocab_size, spec.hidden_size)
        self.embed_tokens: nn.Module = nn.Embedding(spec.vocab_size, spec.hidden_size, _weight=table)  # or HeadRows
        self.layers = nn.ModuleList(LlamaLayer(spec, i) for i in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.lm_head: nn.Module = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        # [P, 2, D]; cast with the model, as the reference casts cos/sin to the activations' dtype
        self.register_buffer("rope", rope_table(spec, max_positions), persistent=False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attention: AttentionBackend) -> torch.Tensor:
        """Hidden states after the final norm: input_ids, positions [T] -> [T, hidden]."""
        x = self.embed_tokens(input_ids)  # [T, hidden]
        table = self.rope[positions].unsqueeze(2)  # [T, 2, 1, D]
        cos, sin = table[:, 0], table[:, 1]  # [T, 1, D] each
        for layer in self.layers:
            x = layer(x, cos, sin, attention)
        return self.norm(x)

    def embed_from_head(self) -> bool:
        """Hold tied weights once: once the output projection is quantised (its layer can hand out rows),
        the embedding reads its rows there and drops its own table (`HeadRows`). True if it did."""
        head = getattr(self.lm_head, "inner", self.lm_head)  # a ThreadedLinear runs the layer it wraps
        rows_of = getattr(head, "dequantise_rows", None)
        if not self.spec.tie_word_embeddings or rows_of is None or not isinstance(self.embed_tokens, nn.Embedding):
            return False
        self.embed_tokens = HeadRows(rows_of, self.embed_tokens.weight)
        return True

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [N, hidden] -> [N, V], float32 so that sampling sees the full tail
        return self.lm_head(hidden).float()
