"""A BERT encoder for the embedding engine that runs its linear layers on packed rows, without padding.

Reads the weights of a transformers `BertModel` (MiniLM, BGE, E5 and other post-LayerNorm BERTs with
absolute positions) and computes the same function as its forward. The difference is the layout: a
batch's token rows are packed into one [tokens, hidden] matrix, so every linear layer is one matrix
multiply over real tokens only (a padded batch multiplies its padding too), and query, key and value
come from one fused weight. Only attention needs the rows apart: it scatters them into a padded
[batch, heads, length, head_dim] block and back, which costs memory moves, not multiplies.

Precision: with `compute_dtype` float32 everything is float32, as transformers computes it. With
bfloat16, the linear layers and attention run in bfloat16 (on CPUs with AMX or AVX512-BF16 that is
several times faster than float32), while the residual stream, LayerNorms, pooling and normalisation
stay float32, so that rounding does not add up layer over layer. See docs/engine.md, "Embedding engine".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

Pooling = Literal["mean", "cls", "max"]
ROW_MULTIPLE = 32  # packed rows are padded to a multiple of this (Packed)
_ROWS_HINT = 512  # the rows a batch is expected to have, for oneDNN's choice of weight layout
_ACTIVATIONS = {"gelu": "none", "gelu_python": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def supports(model: Any) -> bool:
    """True when `model` is a transformers BertModel this module computes exactly."""
    config = model.config
    return (
        type(model).__name__ == "BertModel"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and getattr(config, "hidden_act", None) in _ACTIVATIONS
        and not getattr(config, "is_decoder", False)
    )


class _Linear:
    """y = x W^T + b, optionally followed by GELU, in the compute dtype.

    On a CPU in bfloat16 the weight is reordered once into oneDNN's blocked layout and the GELU is
    fused into the multiply (`torch.ops.mkldnn._linear_pointwise`, the op torch.compile's CPU backend
    emits); elsewhere, or where this torch lacks those ops, plain `F.linear` then `F.gelu`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype, gelu: str | None = None) -> None:
        self.weight = weight.detach().to(dtype).contiguous()  # [N, K]
        self.bias = bias.detach().to(dtype).contiguous()  # [N]
        self.gelu = gelu  # None, or GELU's `approximate` ("none" or "tanh")
        self.fused = _fused_linear_available() and self.weight.device.type == "cpu" and dtype == torch.bfloat16
        if self.fused:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(self.weight, _ROWS_HINT)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]
        if self.fused:
            attr = "none" if self.gelu is None else "gelu"
            algorithm = "" if self.gelu is None else self.gelu
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)
        y = F.linear(x, self.weight, self.bias)
        return y if self.gelu is None else F.gelu(y, approximate=self.gelu)


def _fused_linear_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


@dataclass(frozen=True)
class _Layer:
    qkv: _Linear  # [H] -> [3H]: query, key and value in one multiply
    out: _Linear  # [H] -> [H]
    norm1: tuple[torch.Tensor, torch.Tensor]
    up: _Linear  # [H] -> [I], with the GELU
    down: _Linear  # [I] -> [H]
    norm2: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Packed:
    """A batch's rows laid end to end, and where each row's tokens sit in a padded [B, S] block.

    The packed length is rounded up to a multiple of `ROW_MULTIPLE` with filler tokens that no row
    attends to and no pooling reads: oneDNN compiles a kernel for every new number of rows (and keeps
    a bounded cache of them), so batches of any length then share a few kernels.
    """

    ids: torch.Tensor  # [T'] token ids, T real tokens then T' - T filler
    positions: torch.Tensor  # [T'] position of each token within its row
    slots: torch.Tensor  # [T] index of each real token in the flattened padded block [B * S]
    gather: torch.Tensor  # [T'] the block row each token reads back after attention (filler: row 0)
    mask: torch.Tensor  # [B, 1, 1, S] True where a key is a real token
    lengths: torch.Tensor  # [B]
    width: int  # S, the longest row
    tokens: int  # T

    @classmethod
    def of(cls, rows: list[list[int]], device: torch.device) -> Packed:
        lengths = [len(row) for row in rows]
        width, tokens = max(lengths), sum(lengths)
        filler = -tokens % ROW_MULTIPLE
        ids = [token for row in rows for token in row] + [0] * filler
        positions = [p for n in lengths for p in range(n)] + [0] * filler
        slots = [b * width + p for b, n in enumerate(lengths) for p in range(n)]
        lengths_t = torch.tensor(lengths, device=device)
        mask = torch.arange(width, device=device)[None, :] < lengths_t[:, None]  # [B, S]
        return cls(
            ids=torch.tensor(ids, device=device),
            positions=torch.tensor(positions, device=device),
            slots=torch.tensor(slots, device=device),
            gather=torch.tensor(slots + [0] * filler, device=device),
            mask=mask[:, None, None, :],
            lengths=lengths_t,
            width=width,
            tokens=tokens,
        )


class PackedEncoder:
    """`BertModel`'s forward over packed rows, ending in sentence vectors (pooled, optionally normalised)."""

    def __init__(self, model: Any, compute_dtype: torch.dtype) -> None:
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not a BERT encoder this module computes")
        config = model.config
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.eps = float(config.layer_norm_eps)
        self.approximate = _ACTIVATIONS[config.hidden_act]
        self.dtype = compute_dtype
        low = compute_dtype

        def linear(module: Any, gelu: str | None = None) -> _Linear:
            return _Linear(module.weight, module.bias, low, gelu)

        def norm(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return module.weight.detach().float(), module.bias.detach().float()

        embeddings = model.embeddings
        self.word = embeddings.word_embeddings.weight.detach().float()
        # Every row is segment 0, as sentence-transformers sends it: fold that row into the positions.
        token_type = embeddings.token_type_embeddings.weight.detach().float()[0]
        self.position = embeddings.position_embeddings.weight.detach().float() + token_type
        self.embedding_norm = norm(embeddings.LayerNorm)
        self.layers: list[_Layer] = []
        for layer in model.encoder.layer:
            attention = layer.attention
            q, k, v = attention.self.query, attention.self.key, attention.self.value
            self.layers.append(
                _Layer(
                    qkv=_Linear(torch.cat([q.weight, k.weight, v.weight]), torch.cat([q.bias, k.bias, v.bias]), low),
                    out=linear(attention.output.dense),
                    norm1=norm(attention.output.LayerNorm),
                    up=linear(layer.intermediate.dense, gelu=self.approximate),
                    down=linear(layer.output.dense),
                    norm2=norm(layer.output.LayerNorm),
                )
            )

    def __call__(self, packed: Packed, pooling: Pooling, normalize: bool) -> torch.Tensor:
        """Sentence vectors [B, H], float32."""
        x = self._layer_norm(self.word[packed.ids] + self.position[packed.positions], self.embedding_norm)  # [T', H]
        for layer in self.layers:
            x = self._layer(x, layer, packed)
        pooled = _pool(x, packed, pooling)
        return F.normalize(pooled, p=2.0, dim=-1) if normalize else pooled

    def _layer(self, x: torch.Tensor, layer: _Layer, packed: Packed) -> torch.Tensor:
        # x: [T', H] float32, the residual stream
        context = self._attention(layer.qkv(x.to(self.dtype)), packed)  # [T', 3H] -> [T', H]
        x = self._layer_norm(x + layer.out(context), layer.norm1)
        return self._layer_norm(x + layer.down(layer.up(x.to(self.dtype))), layer.norm2)

    def _attention(self, qkv: torch.Tensor, packed: Packed) -> torch.Tensor:
        batch, width = packed.mask.shape[0], packed.width
        head_dim = self.hidden // self.heads
        real = qkv[: packed.tokens]  # [T, 3H]
        padded = qkv.new_zeros(batch * width, 3 * self.hidden).index_copy_(0, packed.slots, real)  # [B*S, 3H]
        q, k, v = padded.view(batch, width, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)  # each [B, nh, S, hd]
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=packed.mask)  # [B, nh, S, hd]
        return context.transpose(1, 2).reshape(batch * width, self.hidden).index_select(0, packed.gather)  # [T', H]

    def _layer_norm(self, x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(x.float(), (self.hidden,), norm[0], norm[1], self.eps)


def _pool(x: torch.Tensor, packed: Packed, mode: Pooling) -> torch.Tensor:
    """Sentence vectors [B, H] from the packed token states x [T', H]."""
    batch, width = packed.mask.shape[0], packed.width
    if mode == "cls":
        starts = torch.cumsum(packed.lengths, 0) - packed.lengths
        return x[starts]
    fill = float("-inf") if mode == "max" else 0.0
    real = x[: packed.tokens]  # [T, H]
    padded = x.new_full((batch * width, x.shape[1]), fill).index_copy_(0, packed.slots, real).view(batch, width, -1)
    if mode == "max":
        return padded.max(dim=1).values
    return padded.sum(dim=1) / packed.lengths[:, None].to(x.dtype)
