"""Decode attention read straight from the paged cache (engine/native/attention.cpp) against torch's path.

Skipped, with the reason, where the native kernels cannot be built.
"""

from __future__ import annotations

import pytest
import torch

from tokenyard.engine import native
from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention

REASON = native.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 4, 32), (8, 2, 128)])
def test_native_decode_attention_matches_torch(
    dtype: torch.dtype, tolerance: float, heads: int, kv_heads: int, dim: int, kernel_threads: int
) -> None:
    generator = torch.Generator().manual_seed(heads * dim)
    layers, num_slots, lengths = 2, 400, [1, 17, 160, 33]
    k_cache = torch.randn(layers, kv_heads, num_slots, dim, generator=generator).to(dtype)
    v_cache = torch.randn(layers, kv_heads, num_slots, dim, generator=generator).to(dtype)
    width = max(lengths)
    # Each sequence's context in scattered slots, padded with slot 0 past its length.
    slots = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        slots[row, :length] = torch.randperm(num_slots, generator=generator)[:length]
    q = torch.randn(len(lengths), heads, dim, generator=generator).to(dtype)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None])[:, None, :]
    results = []
    for use_native in (True, False):
        attention = PagedAttention(k_cache, v_cache, scale=dim**-0.5, use_native=use_native)
        assert (attention.native is not None) == use_native
        meta = AttentionMetadata(
            slot_mapping=torch.empty(0, dtype=torch.long),
            num_decode=len(lengths),
            decode_slots=slots,
            decode_mask=mask,
            decode_lengths=torch.tensor(lengths),
        )
        results.append(attention._attend_decode(q, k_cache[1], v_cache[1], meta))
    fast, reference = results
    assert fast.dtype == dtype and fast.shape == q.shape
    torch.testing.assert_close(fast.float(), reference.float(), atol=tolerance, rtol=tolerance)
