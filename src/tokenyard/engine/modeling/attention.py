"""Paged attention over a flat batch: decode tokens first (batched), then each prompt chunk.

The KV cache of each layer is one tensor of token slots [num_slots, Hkv, D]; slot
`block * block_size + offset` holds a token of whichever sequence owns that block (see
`engine.kv_cache`). Per layer, the step's new K/V are written to their slots with one `index_copy_`,
then read back through per-sequence slot lists: all decode tokens in one `scaled_dot_product_attention`
call over a padded [B, L] gather with a length mask, and each prompt chunk in its own call with a
causal mask offset by the tokens it already has in the cache. Written for clarity on CPU, where the
gather is cheap next to the matmuls; a fused paged kernel would replace `_attend_*` on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F


@dataclass
class PrefillChunk:
    """One prompt chunk's place in the flat batch and the cache slots of its whole context."""

    start: int  # index of its first token in the flat batch
    length: int  # tokens computed this step
    slots: torch.Tensor  # [context + length] cache slots, oldest first
    mask: torch.Tensor | None  # [length, context + length] bool, None when there is no earlier context


@dataclass
class AttentionMetadata:
    """Where this step's tokens go and what each attends to; built by the model runner."""

    slot_mapping: torch.Tensor  # [T] cache slot of each new token
    num_decode: int = 0  # the first num_decode tokens are single decode tokens, one per sequence
    decode_slots: torch.Tensor | None = None  # [B, L] slots of each decoding sequence's context, padded
    decode_mask: torch.Tensor | None = None  # [B, 1, 1, L] bool, True where a slot is real
    prefills: list[PrefillChunk] = field(default_factory=list)


class PagedAttention:
    """The attention backend `LlamaModel` calls, bound to the cache tensors and one step's metadata."""

    def __init__(self, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache  # [layers, num_slots, Hkv, D] each
        self.scale = scale
        self.meta = AttentionMetadata(slot_mapping=torch.empty(0, dtype=torch.long))

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q: [T, H, D]; k, v: [T, Hkv, D] -> [T, H, D]
        k_cache, v_cache, meta = self.k_cache[layer], self.v_cache[layer], self.meta
        k_cache.index_copy_(0, meta.slot_mapping, k)
        v_cache.index_copy_(0, meta.slot_mapping, v)
        if not meta.prefills:
            return self._attend_decode(q, k_cache, v_cache)
        out = torch.empty_like(q)
        if meta.num_decode:
            out[: meta.num_decode] = self._attend_decode(q[: meta.num_decode], k_cache, v_cache)
        for chunk in meta.prefills:
            span = slice(chunk.start, chunk.start + chunk.length)
            out[span] = self._attend_prefill(q[span], k[span], v[span], chunk, k_cache, v_cache)
        return out

    def _attend_decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        # q: [B, H, D]; decode_slots: [B, L]
        slots = self.meta.decode_slots
        assert slots is not None
        batch, heads, dim = q.shape
        keys = _gather(k_cache, slots).transpose(1, 2)  # [B, Hkv, L, D]
        values = _gather(v_cache, slots).transpose(1, 2)  # [B, Hkv, L, D]
        # The query heads sharing a KV head become that head's "query positions": [B, Hkv, H/Hkv, D].
        # Same result as enable_gqa, without expanding K/V (about twice as fast in bfloat16 on CPU).
        grouped = q.reshape(batch, keys.shape[1], heads // keys.shape[1], dim)
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=self.meta.decode_mask, scale=self.scale)
        return out.reshape(batch, heads, dim)

    def _attend_prefill(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        chunk: PrefillChunk,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        # q: [S, H, D]; k, v: [S, Hkv, D]
        if chunk.mask is None:  # a prompt from its start: plain causal attention on the fresh K/V
            keys, values = k.transpose(0, 1), v.transpose(0, 1)  # [Hkv, S, D]
        else:
            keys = _gather(k_cache, chunk.slots).transpose(0, 1)  # [Hkv, C+S, D]
            values = _gather(v_cache, chunk.slots).transpose(0, 1)  # [Hkv, C+S, D]
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1),
            keys,
            values,
            attn_mask=chunk.mask,
            is_causal=chunk.mask is None,
            scale=self.scale,
            enable_gqa=True,
        )  # [H, S, D]
        return out.transpose(0, 1)


def _gather(cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """cache[slots] for a [num_slots, Hkv, D] cache; `index_select` on the flat slot list is many times
    faster on CPU than advanced indexing with a 2-D index (measured: ~0.2 ms against ~15 ms for 64 x 200)."""
    # slots: [...] -> [..., Hkv, D]
    return cache.index_select(0, slots.reshape(-1)).view(*slots.shape, *cache.shape[1:])
