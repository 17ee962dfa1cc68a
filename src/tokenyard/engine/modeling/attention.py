"""Paged attention over a flat batch: decode tokens first (batched), then each prompt chunk.

The KV cache of each layer is one head-major tensor of token slots [Hkv, num_slots, D]; slot
`block * block_size + offset` holds a token of whichever sequence owns that block (see
`engine.kv_cache`). Per layer, the step's new K/V are written to their slots with one `index_copy_`,
then read back through per-sequence slot lists: all decode tokens at once over a padded [B, L]
gather with a length mask, and each prompt chunk in its own `scaled_dot_product_attention` call with
a causal mask offset by the tokens it already has in the cache.

On CPUs where the native kernels load, decode tokens instead go to `paged_decode_attention`
(engine/native/attention.cpp), which reads each context straight from the cache through its slot
table: no gathered copy, no padding. The torch path stays for other CPUs, CUDA and prompt chunks.

Head-major, because then a gather along the slot axis is already in the [Hkv, B, L, D] layout the
batched matmuls and SDPA read: with slots first, every layer paid a transposing copy of the gathered
K/V. (docs/engine.md, "Measurements behind the code", has the figures behind this module's choices.)

A step's metadata (`AttentionMetadata`, laid out by the runner, engine/step_inputs.py) is handed in,
never kept: `PagedAttention.bind(meta)` gives the backend the model calls for that one step.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from tokenyard.engine import native

MATMUL_DECODE_MIN_BATCH = 16  # from here on decode attention is two matmuls rather than CPU SDPA


@dataclass
class PrefillChunk:
    """One prompt chunk's place in the flat batch and the cache slots of its whole context."""

    start: int  # index of its first token in the flat batch
    length: int  # tokens computed this step
    slots: torch.Tensor  # [context + length] cache slots, oldest first
    mask: torch.Tensor | None  # [length, context + length] bool, None when there is no earlier context


@dataclass
class AttentionMetadata:
    """Where this step's tokens go and what each attends to; built per step (engine/step_inputs.py)."""

    slot_mapping: torch.Tensor  # [T] cache slot of each new token
    num_decode: int = 0  # the first num_decode tokens are single decode tokens, one per sequence
    decode_slots: torch.Tensor | None = None  # [B, L] slots of each decoding sequence's context, padded
    decode_mask: torch.Tensor | None = None  # [B, 1, L] bool, True where a slot is real
    decode_lengths: torch.Tensor | None = None  # [B] int64 on the host: each context's length (native kernel)
    prefills: list[PrefillChunk] = field(default_factory=list)


class PagedAttention:
    """The KV cache tensors and the decode kernel chosen for them; `bind(meta)` makes a step's backend."""

    def __init__(self, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float, *, use_native: bool = True) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache  # [layers, Hkv, num_slots, D] each
        self.scale = scale
        fits = k_cache.device.type == "cpu" and k_cache.dtype in (torch.bfloat16, torch.float32)
        fits = fits and k_cache.shape[-1] % 16 == 0
        # Decode attention straight from the cache (engine/native/attention.cpp) where it runs.
        self.native: ctypes.CDLL | None = native.kernels() if use_native and fits else None

    def bind(self, meta: AttentionMetadata) -> StepAttention:
        """The backend `LlamaModel` calls for the one step `meta` describes."""
        return StepAttention(self, meta)

    def decode_inputs(
        self, slots: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Decoding sequences' slots [B, L] (host, padded past each length) and lengths [B] in the form
        this cache's decode kernel reads: (slots, mask [B, 1, L] or None, lengths [B] or None). The
        native kernel reads the lengths on the host; torch's attention a mask on the device instead."""
        if self.native is not None:
            return slots, None, lengths
        device = self.k_cache.device
        width = int(lengths.max())
        if bool((lengths == width).all()):  # nothing to mask (always so at batch 1): the faster unmasked kernel
            return slots[:, :width].to(device), None, None
        mask = torch.arange(slots.shape[1])[None, :] < lengths[:, None]  # [B, L]
        return slots.to(device), mask[:, None, :].to(device), None  # [B, 1, L]

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        # q: [T, H, D]; k, v: [T, Hkv, D] -> [T, H, D]
        k_cache, v_cache = self.k_cache[layer], self.v_cache[layer]
        k_cache.index_copy_(1, meta.slot_mapping, k.transpose(0, 1))
        v_cache.index_copy_(1, meta.slot_mapping, v.transpose(0, 1))
        if not meta.prefills:
            return self._attend_decode(q, k_cache, v_cache, meta)
        out = torch.empty_like(q)
        if meta.num_decode:
            out[: meta.num_decode] = self._attend_decode(q[: meta.num_decode], k_cache, v_cache, meta)
        for chunk in meta.prefills:
            span = slice(chunk.start, chunk.start + chunk.length)
            out[span] = self._attend_prefill(q[span], k[span], v[span], chunk, k_cache, v_cache)
        return out

    def _attend_decode(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        # q: [B, H, D]; decode_slots: [B, L]
        slots, mask = meta.decode_slots, meta.decode_mask
        assert slots is not None
        if self.native is not None and meta.decode_lengths is not None:  # padded graph steps bring a mask
            return self._attend_decode_native(q, k_cache, v_cache, slots, meta.decode_lengths)
        batch, heads, dim = q.shape
        keys, values = _gather(k_cache, slots), _gather(v_cache, slots)  # [Hkv, B, L, D] each
        kv_heads = keys.shape[0]
        # The query heads sharing a KV head become that head's "query positions": [Hkv, B, H/Hkv, D].
        # Same result as enable_gqa, without expanding K/V, which is slower in bfloat16 on CPU.
        grouped = q.view(batch, kv_heads, heads // kv_heads, dim).transpose(0, 1)
        if batch < MATMUL_DECODE_MIN_BATCH:
            out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=self.scale)
        else:
            out = _matmul_attention(grouped, keys, values, mask, self.scale)
        return out.transpose(0, 1).reshape(batch, heads, dim)

    def _attend_decode_native(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        assert self.native is not None
        q = q.contiguous()
        batch, heads, dim = q.shape
        out = torch.empty_like(q)
        self.native.paged_decode_attention(
            int(q.dtype == torch.bfloat16),
            q.data_ptr(),
            k_cache.data_ptr(),
            v_cache.data_ptr(),
            k_cache.shape[1],
            slots.data_ptr(),
            slots.shape[1],
            lengths.data_ptr(),
            batch,
            heads,
            k_cache.shape[0],
            dim,
            self.scale,
            out.data_ptr(),
        )
        return out

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
            keys = _gather(k_cache, chunk.slots)  # [Hkv, C+S, D]
            values = _gather(v_cache, chunk.slots)  # [Hkv, C+S, D]
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


@dataclass(frozen=True)
class StepAttention:
    """`PagedAttention` with one step's metadata: the `AttentionBackend` the model calls in that step."""

    paged: PagedAttention
    meta: AttentionMetadata

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.paged.attend(layer, q, k, v, self.meta)


def _matmul_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Softmax attention as two batched matmuls, the softmax in float32.

    With one query per sequence, CPU SDPA's flash kernel (tiled for long queries) loses to two plain
    matmuls from about MATMUL_DECODE_MIN_BATCH sequences on.
    """
    # q: [Hkv, B, G, D]; keys, values: [Hkv, B, L, D]; mask: [B, 1, L] bool or None -> [Hkv, B, G, D]
    scores = torch.matmul(q * scale, keys.transpose(-1, -2))  # [Hkv, B, G, L]; scaling q is the smaller op
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf"))
    # softmax of bfloat16 accumulates in float32 inside the kernel; no float32 copy of the scores needed
    return torch.matmul(torch.softmax(scores, dim=-1), values)


def _gather(cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """cache[:, slots] for a [Hkv, num_slots, D] cache; `index_select` on the flat slot list, because on
    CPU advanced indexing with a 2-D index is many times slower."""
    # slots: [...] -> [Hkv, ..., D]
    return cache.index_select(1, slots.reshape(-1)).view(cache.shape[0], *slots.shape, cache.shape[-1])
