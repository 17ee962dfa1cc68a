"""K-quant and 32-channel GGUF blocks: decoding against the `gguf` package's reference dequantisation,
the tile layout, the native K-quant kernel against the product of the dequantised weights with
activations quantised as llama.cpp's Q8_K, and the block kernel's one-part mode (the 32-channel types
of `--quantization gguf`) against the product with llama.cpp's Q8_0 / Q8_1 activations.

The kernel tests run at 1 and 2 threads of the kernels' pool (the `kernel_threads` fixture) and skip,
with the reason, where the native kernels cannot be built.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import quants
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.blockq import BlockQLinear
from tokenyard.engine.modeling.gguf_weights import BLOCK32_TYPES, decode_block32, dequantise_block32
from tokenyard.engine.modeling.kquant import (
    BLOCK_BYTES,
    Q4_K,
    Q5_K,
    Q6_K,
    KQuantLinear,
    decode_kquant,
    pack_kquant,
)

REASON = native.unavailable_reason()
needs_native = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")
SCALE_AT = {Q4_K: (0, 2), Q5_K: (0, 2), Q6_K: (208,)}  # byte offsets of float16 d (and dmin) in a block
BLOCK32_BYTES = {2: 18, 3: 20, 6: 22, 7: 24, 8: 34}
BLOCK32_SCALES = {2: (0,), 3: (0, 2), 6: (0,), 7: (0, 2), 8: (0,)}


def random_blocks(ggml_type: int, rows: int, k: int, seed: int = 0) -> np.ndarray:
    """Raw GGUF rows of random bytes (every byte pattern is a valid block) with sane float16 scales."""
    rng = np.random.default_rng(seed)
    size, per = (BLOCK_BYTES[ggml_type], 256) if ggml_type in BLOCK_BYTES else (BLOCK32_BYTES[ggml_type], 32)
    raw = rng.integers(0, 256, size=(rows, k // per, size), dtype=np.uint8)
    for at in SCALE_AT.get(ggml_type) or BLOCK32_SCALES[ggml_type]:
        scale = rng.uniform(0.001, 0.01, size=(rows, k // per)).astype(np.float16)
        raw[..., at : at + 2] = scale[..., None].view(np.uint8)
    return raw.reshape(rows, -1)


def reference(raw: np.ndarray, ggml_type: int) -> np.ndarray:
    return quants.dequantize(raw, gguf.GGMLQuantizationType(ggml_type))


def q8_k(x: torch.Tensor) -> torch.Tensor:
    """llama.cpp's Q8_K activations, dequantised: per 256 channels, q = round(127 x / amax) and d = amax / 127."""
    blocks = x.float().reshape(x.shape[0], -1, 256)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    return (torch.round(blocks * (127 / amax)) * (amax / 127)).reshape(x.shape)


def q8_0(x: torch.Tensor) -> torch.Tensor:
    """The block kernel's int8 activations per 32 (llama.cpp's Q8_0), dequantised."""
    blocks = x.float().reshape(x.shape[0], -1, 32)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    return (torch.round(blocks * (127 / blocks.abs().amax(dim=-1, keepdim=True))) * d).reshape(x.shape)


@pytest.mark.parametrize("ggml_type", [Q4_K, Q5_K, Q6_K])
def test_kquant_decoding_matches_the_gguf_reference(ggml_type: int) -> None:
    raw = random_blocks(ggml_type, 32, 512)
    blocks = decode_kquant(raw, ggml_type)
    assert blocks.q.max() <= {Q4_K: 15, Q5_K: 31, Q6_K: 63}[ggml_type]
    np.testing.assert_array_equal(blocks.dequantise(), reference(raw, ggml_type))


@pytest.mark.parametrize("ggml_type", sorted(BLOCK32_TYPES))
def test_block32_decoding_matches_the_gguf_reference(ggml_type: int) -> None:
    raw = random_blocks(ggml_type, 16, 96)
    np.testing.assert_array_equal(dequantise_block32(decode_block32(raw, ggml_type)), reference(raw, ggml_type))


def test_pack_puts_sixteen_rows_of_eight_channels_in_each_vector() -> None:
    blocks = decode_kquant(random_blocks(Q5_K, 16, 256), Q5_K)
    packed = pack_kquant(blocks)  # [tiles, super-blocks, bytes]
    assert packed.shape == (1, 1, 64 + 8 * 16 + 8 * 32 + 32 * 64 + 32 * 16)
    nibbles = packed[0, 0, 448 : 448 + 2048].reshape(32, 16, 4)  # [vector j, row, channel c]
    q = blocks.q
    assert int(nibbles[5, 3, 2]) == int(q[3, 42] & 15) | (int(q[3, 46] & 15) << 4)  # channels 8j + c, 8j + 4 + c
    masks = packed[0, 0, 448 + 2048 :].reshape(32, 2, 8)  # [vector j, low/high nibbles, 64 bits]
    bit = 4 * 3 + 2  # row 3, channel 2
    assert (int(masks[5, 1, bit // 8]) >> (bit % 8)) & 1 == int(q[3, 46]) >> 4
    d = packed[0, 0, :32].view(np.float16)
    np.testing.assert_array_equal(d, blocks.d[:, 0])


def kquant_layer(parts: list[tuple[int, int]], k: int, dtype: torch.dtype) -> tuple[KQuantLinear, torch.Tensor]:
    """A layer stacking parts of (type, rows) and its dequantised weight [N, K] (float32)."""
    raws = [(random_blocks(t, rows, k, seed=i), t) for i, (t, rows) in enumerate(parts)]
    weight = torch.from_numpy(np.concatenate([reference(raw, t) for raw, t in raws]))
    linear = nn.Linear(k, weight.shape[0], bias=False).to(dtype)
    return KQuantLinear(linear, [decode_kquant(raw, t) for raw, t in raws]), weight


@needs_native
@pytest.mark.parametrize("ggml_type", [Q4_K, Q5_K, Q6_K])
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_the_dequantised_product(
    ggml_type: int, rows: int, dtype: torch.dtype, kernel_threads: int
) -> None:
    layer, weight = kquant_layer([(ggml_type, 48)], 512, dtype)
    x = torch.randn(rows, 512, generator=torch.Generator().manual_seed(rows)).to(dtype)
    out = layer(x)
    assert out.dtype == dtype and out.shape == (rows, 48)
    expected = q8_k(x).double() @ weight.double().T  # the same integers, so only float rounding differs
    scale = expected.abs().max().item()
    tolerance = 1e-5 if dtype == torch.float32 else 8e-3  # bfloat16: the output's own rounding
    assert (out.double() - expected).abs().max().item() <= tolerance * scale
    exact = x.double() @ weight.double().T  # and close to the unquantised activations' product
    assert (out.double() - exact).abs().max().item() <= 0.05 * exact.abs().max().item()


@needs_native
def test_a_fused_layer_may_mix_types_tile_by_tile(kernel_threads: int) -> None:
    parts = [(Q4_K, 32), (Q6_K, 16), (Q5_K, 16)]
    layer, weight = kquant_layer(parts, 256, torch.float32)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(7))
    expected = q8_k(x).double() @ weight.double().T
    torch.testing.assert_close(layer(x).double(), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    assert layer.types == ["Q4_K", "Q5_K", "Q6_K"]


@needs_native
def test_a_zero_activation_row_gives_zeros() -> None:
    layer, _ = kquant_layer([(Q6_K, 16)], 256, torch.float32)
    x = torch.zeros(2, 256)
    x[1, 7] = 1.0
    out = layer(x)
    assert torch.equal(out[0], torch.zeros(16)) and out[1].abs().sum() > 0


@needs_native
@pytest.mark.parametrize("ggml_type", sorted(BLOCK32_TYPES))
def test_block32_files_run_exactly_on_the_block_kernel(ggml_type: int) -> None:
    raw = random_blocks(ggml_type, 32, 96)
    u, d, m = decode_block32(raw, ggml_type)
    bits = 4 if ggml_type in (2, 3) else 8
    blocks = (torch.from_numpy(u.astype(np.int32)), torch.from_numpy(d), torch.from_numpy(m))
    layer = BlockQLinear(nn.Linear(96, 32, bias=False), bits, dense=False, blocks=blocks)
    x = torch.randn(4, 96, generator=torch.Generator().manual_seed(1))
    weight = torch.from_numpy(reference(raw, ggml_type)).double()
    expected = x.double() @ weight.T
    # the block kernel takes activations in two int8 parts per block (~15 bits, blockq.cpp's kFine), so it
    # is within 0.1% of the exact product, where q8_0 activations alone are ~1% off
    torch.testing.assert_close(layer(x).double(), expected, rtol=0, atol=1e-3 * expected.abs().max().item())
    assert (q8_0(x).double() @ weight.T - expected).abs().max() > (layer(x).double() - expected).abs().max()


def llama_q8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """llama.cpp's Q8_0 / Q8_1 activations per block of 32: q = round(127 x / amax) [T, B, 32], the scale
    amax / 127 stored as float16 [T, B], and Q8_1's s = float16(scale * sum q) [T, B] (float32 steps as
    quantize_row_q8_0/q8_1 take them)."""
    blocks = x.float().reshape(x.shape[0], -1, 32)
    amax = blocks.abs().amax(dim=-1)
    inverse = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inverse[..., None])
    d = amax / 127
    return q, d.half().float(), (d * q.sum(dim=-1)).half().float()


def llama_block_product(
    x: torch.Tensor, raws: list[tuple[np.ndarray, int]], q8_1_types: tuple[int, ...] = (3, 7)
) -> torch.Tensor:
    """What llama.cpp computes for x @ W^T with W the stacked 32-channel parts: per block d_w dx sum(u q)
    plus m times dx sum(q) (Q8_0; the offset folded into q) or Q8_1's rounded s (for Q4_1, Q5_1), in
    float64."""
    q, dx, s = (v.double() for v in llama_q8(x))
    outs = []
    for raw, ggml_type in raws:
        u, d, m = (torch.from_numpy(np.asarray(v, dtype=np.float64)) for v in decode_block32(raw, ggml_type))
        u = u.reshape(u.shape[0], -1, 32)  # [N, B, 32]
        dots = torch.einsum("tbi,nbi->tnb", q, u)  # [T, N, B]
        sums = s if ggml_type in q8_1_types else dx * q.sum(dim=-1)  # [T, B]
        outs.append((dots * d[None] * dx[:, None] + m[None] * sums[:, None]).sum(dim=-1))
    return torch.cat(outs, dim=1)


def gguf_block_layer(raws: list[tuple[np.ndarray, int]], dtype: torch.dtype) -> BlockQLinear:
    """The layer `--quantization gguf` makes of these parts (gguf_weights._replaced)."""
    decoded = [decode_block32(raw, t) for raw, t in raws]
    u, d, m = (torch.from_numpy(np.concatenate([part[j] for part in decoded])) for j in range(3))
    bits = 4 if {t for _, t in raws} <= {2, 3} else 8
    q8_1 = torch.cat([torch.full((raw.shape[0],), t in (3, 7)) for raw, t in raws])
    linear = nn.Linear(u.shape[1], u.shape[0], bias=False).to(dtype)
    return BlockQLinear(linear, bits, dense=False, blocks=(u.to(torch.int32), d, m), q8_1_rows=q8_1)


@needs_native
@pytest.mark.parametrize("ggml_type", sorted(BLOCK32_TYPES))
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gguf_block_layers_take_llama_cpp_activations(
    ggml_type: int, rows: int, dtype: torch.dtype, kernel_threads: int
) -> None:
    raws = [(random_blocks(ggml_type, 48, 128, seed=rows), ggml_type)]
    layer = gguf_block_layer(raws, dtype)
    x = torch.randn(rows, 128, generator=torch.Generator().manual_seed(rows)).to(dtype)
    out = layer(x)
    assert out.dtype == dtype and out.shape == (rows, 48)
    expected = llama_block_product(x, raws)  # the same integers and scales: only float rounding differs
    scale = expected.abs().max().item()
    tolerance = 2e-6 if dtype == torch.float32 else 8e-3  # bfloat16: the output's own rounding
    assert (out.double() - expected).abs().max().item() <= tolerance * scale
    if dtype == torch.float32:  # one part, not the two-part activations of our own int4/int8 (~15 bits)
        exact = x.double() @ torch.from_numpy(reference(raws[0][0], ggml_type)).double().T
        assert (out.double() - exact).abs().max().item() > 100 * tolerance * scale


@needs_native
def test_a_gguf_block_layer_takes_each_parts_activations_tile_by_tile(kernel_threads: int) -> None:
    raws = [(random_blocks(t, 16, 256, seed=i), t) for i, t in enumerate([3, 8, 7, 6, 2])]  # Q4_1 Q8_0 Q5_1 ...
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(3))
    out = gguf_block_layer(raws, torch.float32)(x).double()
    expected = llama_block_product(x, raws)
    atol = 2e-6 * expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=0, atol=atol)
    # Q8_1's rounded sum matters at this tolerance: Q8_0's exact one for the Q4_1 and Q5_1 rows is told apart
    assert (out - llama_block_product(x, raws, q8_1_types=())).abs().max().item() > atol


@needs_native
def test_two_threads_give_the_same_bits_as_one() -> None:
    lib = native.kernels()
    assert lib is not None
    layer, _ = kquant_layer([(Q4_K, 512), (Q6_K, 256), (Q5_K, 256)], 512, torch.bfloat16)  # 64 tiles
    x = torch.randn(19, 512).to(torch.bfloat16)
    try:
        lib.native_set_threads(1)
        alone = layer(x)
        lib.native_set_threads(2)
        shared = [layer(x) for _ in range(3)]
    finally:
        lib.native_set_threads(1)
    assert all(torch.equal(alone, out) for out in shared)  # each tile computed whole by one thread
