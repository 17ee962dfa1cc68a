"""Linear layers on the native block-quantised kernels (`engine/native/blockq.cpp`).

Weights are kept as blocks of 32 input channels per output row, w = d * u + m (float16 d and m):
- 4-bit: u in 0..15, GGUF's Q4_1 grid, so a model converted from a Q4_1 file keeps its exact weights;
- 8-bit: u = q + 128 with q in -127..127 and m = -128 d, GGUF's Q8_0 grid (the output projection of
  SmolLM2's file is Q8_0, so it too is kept exactly).
`pack_blockq` puts them in the kernel's tile layout (see blockq.cpp); `BlockQLinear.quantised_mm`
quantises the activations per block to int8 and multiplies: in two int8 parts for our own int4/int8
(near exact), or, for a GGUF file's own blocks (`gguf_weights.py`), in one part as llama.cpp quantises
them for each tile's type (Q8_0, or Q8_1 for Q4_1 and Q5_1), so the file scores as it does there.
Only on CPUs the kernel library loads on (`tokenyard.engine.native.kernels()`); elsewhere the layers in
`quant.py` use torch's kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.quant import QuantisedLinear

BLOCK = 32
TILE = 16
BLOCKQ_MAX_ROWS = 64  # single-threaded, it beats bfloat16 on two threads up to 64 rows (docs/engine.md)
BLOCKQ_ONE_PART = 64  # kernels.h: the kind flag for llama.cpp's one-part activations


def blockq_fits(linear: nn.Linear) -> bool:
    return linear.in_features % BLOCK == 0 and linear.out_features % TILE == 0


def quantise_blocks(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (u [N, K] int32, d [N, K/32], m [N, K/32]) with w ~ d * u + m per block of 32."""
    n, k = weight.shape
    blocks = weight.float().reshape(n, k // BLOCK, BLOCK)
    if bits == 4:  # asymmetric: the block's min and max are grid points (Q4_1)
        low, high = blocks.amin(dim=-1), blocks.amax(dim=-1)
        d = ((high - low) / 15).clamp(min=1e-8)
        u = torch.round((blocks - low[..., None]) / d[..., None]).clamp(0, 15)
        return u.to(torch.int32).reshape(n, k), d, low
    d = (blocks.abs().amax(dim=-1) / 127).clamp(min=1e-8)  # symmetric (Q8_0), stored with a +128 offset
    q = torch.round(blocks / d[..., None]).clamp(-127, 127)
    return (q + 128).to(torch.int32).reshape(n, k), d, -128 * d


def pack_blockq(u: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u [N, K], d, m [N, K/32]) -> (weights uint8, scales float16) in the kernel's tile layout."""
    n, k = u.shape
    tiles, blocks = n // TILE, k // BLOCK
    u = u.to(torch.uint8)
    if bits == 4:
        # [tile, row, block, pair j, half h, channel c] -> [tile, block, j, row, c, h]; k = 32b + 8j + 4h + c
        grouped = u.reshape(tiles, TILE, blocks, 4, 2, 4).permute(0, 2, 3, 1, 5, 4)
        weights = grouped[..., 0] | (grouped[..., 1] << 4)
    else:
        # [tile, row, block, group j, channel c] -> [tile, block, j, row, c]; k = 32b + 4j + c
        weights = u.reshape(tiles, TILE, blocks, 8, 4).permute(0, 2, 3, 1, 4)
    scales = torch.stack([d, m], dim=-1).reshape(tiles, TILE, blocks, 2).permute(0, 2, 3, 1)  # [tile, b, 2, 16]
    return weights.contiguous().flatten(), scales.to(torch.float16).contiguous().flatten()


class BlockQLinear(QuantisedLinear):
    """A weight-only 4- or 8-bit linear layer on the native kernels; dense weights kept for many rows."""

    max_rows = BLOCKQ_MAX_ROWS

    def __init__(
        self,
        linear: nn.Linear,
        bits: int,
        *,
        dense: bool = True,
        float_output: bool = False,
        blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        q8_1_rows: torch.Tensor | None = None,
    ) -> None:
        """blocks: (u, d, m) as `quantise_blocks` returns them, taken as they are (a GGUF file's own
        blocks, see gguf_weights.py); by default `linear`'s weight is quantised.
        q8_1_rows: [N] bool, given for a GGUF file's blocks: the activations are then quantised in one
        int8 part as llama.cpp does, with Q8_1's rounded block sum for the rows marked (Q4_1, Q5_1 in the
        file) and Q8_0 for the others. A tile of 16 rows takes Q8_1 if any of its rows does (a fused
        layer's parts start on tile boundaries in every model we know of)."""
        super().__init__(linear, dense=dense)
        lib = native.kernels()
        if lib is None or not blockq_fits(linear):
            raise ValueError("BlockQLinear needs the native kernels and a [16n, 32k] weight")
        self.lib, self.bits = lib, bits
        self.kind = bits if q8_1_rows is None else bits | BLOCKQ_ONE_PART  # NativeLinear.kind (kernels.h)
        self.float_output = float_output  # the output projection: float32 logits straight from the kernel
        if blocks is None:
            blocks = quantise_blocks(linear.weight.detach(), bits)
        weights, scales = pack_blockq(*blocks, bits)
        if q8_1_rows is not None:  # after the scales, one uint16 per tile: 1 where it takes Q8_1
            tiles = q8_1_rows.reshape(-1, TILE).any(dim=1).to(torch.int16).view(torch.float16)
            scales = torch.cat([scales, tiles])
        self.register_buffer("weights", weights)
        self.register_buffer("scales", scales)

    def quantised_mm(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]; activations quantised per block inside the call (blockq_linear)
        dtype = x.dtype
        x, out = kernel_buffers(x, self.out_features, self.float_output)
        self.lib.blockq_linear(
            self.kind,
            self.weights.data_ptr(),
            self.scales.data_ptr(),
            self.out_features,
            self.in_features,
            x.data_ptr(),
            int(x.dtype == torch.bfloat16),
            x.shape[0],
            out.data_ptr(),
            int(out.dtype == torch.bfloat16),
        )
        return out if self.float_output or out.dtype == dtype else out.to(dtype)

    def dequantise_rows(self, rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows of the weight matrix, w = d u + m per block: ids [R] -> [R, K] in float32, or rounded to
        bfloat16 (the embedding lookup of a tied model, `HeadRows`). One native call (blockq.cpp's
        `blockq_rows`): the dozen torch ops it replaces cost a decode step ~0.2 ms."""
        if dtype not in (torch.float32, torch.bfloat16):
            return self.dequantise_rows(rows).to(dtype)
        ids = rows.to(torch.int64).contiguous()
        out = torch.empty(ids.shape[0], self.in_features, dtype=dtype)
        bf16 = int(dtype == torch.bfloat16)
        status = self.lib.blockq_rows(
            self.bits,
            self.weights.data_ptr(),
            self.scales.data_ptr(),
            self.out_features,
            self.in_features,
            ids.data_ptr(),
            ids.shape[0],
            out.data_ptr(),
            bf16,
        )
        if status != 0:
            raise IndexError(f"row ids must be in [0, {self.out_features})")
        return out


def kernel_buffers(x: torch.Tensor, out_features: int, float_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The activations as the native linear kernels read them (bfloat16 or float32, contiguous) and the
    output they write: float32 for float32 input or float logits, bfloat16 otherwise."""
    if x.dtype not in (torch.bfloat16, torch.float32):
        x = x.float()
    x = x.contiguous()
    out_dtype = torch.float32 if float_output or x.dtype == torch.float32 else torch.bfloat16
    return x, torch.empty(x.shape[0], out_features, dtype=out_dtype)
