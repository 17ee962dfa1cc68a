"""Linear layers on llama.cpp's K-quant weights (Q4_K, Q5_K, Q6_K), kept at the file's own precision.

A K-quant row is super-blocks of 256 input channels, each with a float16 `d` (and `dmin`) and small
integer scales per sub-block (llama.cpp's `ggml-common.h` describes the bytes; `gguf.quants` decodes
them in numpy, which the tests use as the reference):
- Q4_K (144 bytes): 8 sub-blocks of 32, 6-bit scale and min each packed in 12 bytes, 4-bit q:
  w = d sc q - dmin mn;
- Q5_K (176 bytes): the same with a fifth bit of q in a separate 32-byte plane;
- Q6_K (210 bytes): 16 sub-blocks of 16 with int8 scales, 6-bit q: w = d sc (q - 32), which is the
  Q4_K form with dmin = d and mn = 32 sc.
`decode_kquant` turns a tensor's raw rows into that common form (`KQuantBlocks`), `pack_kquant` into
the tile layout of `engine/native/kquant.cpp`, and `KQuantLinear` multiplies with it, activations
quantised per super-block as llama.cpp's Q8_K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.blockq import kernel_buffers
from tokenyard.engine.modeling.quant import QuantisedLinear

SUPER = 256
TILE = 16
Q4_K, Q5_K, Q6_K = 12, 13, 14  # ggml's type numbers, which the kernel's tile table carries
KQUANT_TYPES = {Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}
BLOCK_BYTES = {Q4_K: 144, Q5_K: 176, Q6_K: 210}
SUB_BLOCKS = {Q4_K: 8, Q5_K: 8, Q6_K: 16}
PLANES = {Q4_K: 0, Q5_K: 1, Q6_K: 2}  # bits of q above the low four
KQUANT_MAX_ROWS = 64  # as BlockQLinear: single-threaded, it beats bfloat16 on two threads up to here


@dataclass
class KQuantBlocks:
    """One tensor in the common K-quant form: w[r, 256 b + i] = d sc q - dmin mn for i's sub-block."""

    ggml_type: int
    q: np.ndarray  # [N, K] uint8, 0..63
    d: np.ndarray  # [N, K/256] float16
    dmin: np.ndarray  # [N, K/256] float16
    scales: np.ndarray  # [N, K/256, S] int8
    mins: np.ndarray  # [N, K/256, S] int16

    def dequantise(self) -> np.ndarray:
        """float32 [N, K], rounded as llama.cpp's dequantisation: (d sc) q - (dmin mn)."""
        n, k = self.q.shape
        s = self.scales.shape[-1]
        scale = self.d.astype(np.float32)[..., None] * self.scales.astype(np.float32)  # [N, B, S]
        low = self.dmin.astype(np.float32)[..., None] * self.mins.astype(np.float32)
        q = self.q.reshape(n, k // SUPER, s, SUPER // s).astype(np.float32)
        return (scale[..., None] * q - low[..., None]).reshape(n, k)


def decode_kquant(raw: np.ndarray, ggml_type: int) -> KQuantBlocks:
    """raw [N, K/256 * block bytes] uint8, a GGUF tensor's rows -> the common form."""
    n = raw.shape[0]
    blocks = raw.reshape(n, -1, BLOCK_BYTES[ggml_type])  # [N, B, bytes]
    if ggml_type == Q6_K:
        return _decode_q6_k(blocks)
    d, dmin = blocks[..., 0:2].view(np.float16)[..., 0], blocks[..., 2:4].view(np.float16)[..., 0]
    scales, mins = _six_bit_scales(blocks[..., 4:16])
    qs = blocks[..., -128:].reshape(n, -1, 4, 1, 32)  # 4 chunks of 64 channels: low nibbles, then high
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=3)  # [N, B, 4, 2, 32]: sub-block 2c + h
    if ggml_type == Q5_K:
        high = blocks[..., 16:48]  # bit u of byte l: channel 32 u + l
        bits = (high[:, :, None, :] >> np.arange(8, dtype=np.uint8)[None, None, :, None]) & 1
        q = q | (bits.reshape(q.shape) << 4)
    return KQuantBlocks(ggml_type, q.reshape(n, -1), d, dmin, scales.astype(np.int8), mins.astype(np.int16))


def _six_bit_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes -> 8 scales and 8 mins of 6 bits: the low 6 bits of bytes 0-3 (scales 0-3) and 4-7
    (mins 0-3); for 4-7 the nibbles of bytes 8-11 with the top 2 bits of bytes 0-3 / 4-7 above them."""
    first, second, rest = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate([first & 63, (rest & 0x0F) | ((first >> 6) << 4)], axis=-1)
    mins = np.concatenate([second & 63, (rest >> 4) | ((second >> 6) << 4)], axis=-1)
    return scales, mins


def _decode_q6_k(blocks: np.ndarray) -> KQuantBlocks:
    # bytes: low 4 bits [128], high 2 bits [64], scales [16] int8, d. Channel 128 h + 32 g + l (g 0-3)
    # has its low bits in byte 64 h + 32 (g % 2) + l (nibble g // 2), its high bits at 2g of byte 32 h + l.
    n, b = blocks.shape[:2]
    low = blocks[..., 0:128].reshape(n, b, 2, 1, 2, 32)  # [.., h, nibble, g % 2, l]
    low = np.concatenate([low & 0x0F, low >> 4], axis=3).reshape(n, b, 2, 4, 32)  # g = 2 nibble + g % 2
    high = blocks[..., 128:192].reshape(n, b, 2, 1, 32)
    high = (high >> (2 * np.arange(4, dtype=np.uint8))[None, None, None, :, None]) & 3
    q = (low | (high << 4)).reshape(n, -1)
    scales = blocks[..., 192:208].view(np.int8)
    d = blocks[..., 208:210].view(np.float16)[..., 0]
    return KQuantBlocks(Q6_K, q, d, d, scales, scales.astype(np.int16) * 32)


def pack_kquant(blocks: KQuantBlocks) -> np.ndarray:
    """The kernel's tile layout (see kquant.cpp): [N / 16, K / 256, bytes of one tile's super-block]."""
    n, k = blocks.q.shape
    tiles, supers, s = n // TILE, k // SUPER, SUB_BLOCKS[blocks.ggml_type]

    def per_tile(a: np.ndarray) -> np.ndarray:  # [N, B, ...] -> [tiles, B, ..., 16 rows]
        a = a.reshape(tiles, TILE, supers, *a.shape[2:])
        return np.moveaxis(a, 1, -1)

    head = np.ascontiguousarray(np.stack([per_tile(blocks.d), per_tile(blocks.dmin)], axis=2))  # [t, B, 2, 16]
    head = head.view(np.uint8)
    scales = per_tile(blocks.scales).view(np.uint8)  # [t, B, S, 16]
    mins = np.moveaxis(per_tile(blocks.mins.reshape(n, supers, s // 2, 2)), -2, -1)  # [t, B, S/2, 16, 2]
    # q: [t, row, B, vector j, half h, channel c] -> [t, B, j, h, row, c]
    q = blocks.q.reshape(tiles, TILE, supers, 32, 2, 4).transpose(0, 2, 3, 4, 1, 5)
    nibbles = (q[:, :, :, 0] & 0x0F) | ((q[:, :, :, 1] & 0x0F) << 4)  # [t, B, j, row, c]
    parts = [head, scales, np.ascontiguousarray(mins).view(np.uint8), nibbles]
    planes = PLANES[blocks.ggml_type]
    if planes:
        bits = np.stack([(q >> (4 + p)) & 1 for p in range(planes)], axis=3)  # [t, B, j, p, h, row, c]
        masks = np.packbits(bits.reshape(*bits.shape[:5], 64), axis=-1, bitorder="little")
        parts.append(masks)
    flat = [np.ascontiguousarray(part).reshape(tiles, supers, -1) for part in parts]
    return np.concatenate(flat, axis=-1)


def pack_parts(parts: list[KQuantBlocks]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-stacked tensors (a fused Q/K/V may mix types) -> (weights uint8, tile table int64)."""
    buffers, table, offset = [], [], 0
    for part in parts:
        packed = pack_kquant(part)  # [tiles, B, bytes]
        tile_bytes = packed.shape[1] * packed.shape[2]
        table += [(part.ggml_type << 56) | (offset + i * tile_bytes) for i in range(packed.shape[0])]
        offset += packed.size
        buffers.append(packed.reshape(-1))
    return torch.from_numpy(np.concatenate(buffers)), torch.tensor(table, dtype=torch.int64)


def kquant_fits(in_features: int, out_features: int) -> bool:
    return in_features % SUPER == 0 and out_features % TILE == 0


class KQuantLinear(QuantisedLinear):
    """A linear layer on K-quant blocks taken as they are from a GGUF file (no dense copy by default)."""

    max_rows = KQUANT_MAX_ROWS

    def __init__(
        self, linear: nn.Linear, parts: list[KQuantBlocks], *, dense: bool = False, float_output: bool = False
    ) -> None:
        super().__init__(linear, dense=dense)
        lib = native.kernels()
        rows = sum(part.q.shape[0] for part in parts)
        if lib is None or rows != linear.out_features or not kquant_fits(linear.in_features, rows):
            raise ValueError("KQuantLinear needs the native kernels and [16n, 256k] K-quant rows")
        if any(part.q.shape[0] % TILE for part in parts):
            raise ValueError("each part of a fused K-quant layer needs a multiple of 16 rows")
        self.lib = lib
        self.float_output = float_output
        self.types = sorted({KQUANT_TYPES[part.ggml_type] for part in parts})
        weights, table = pack_parts(parts)
        self.register_buffer("weights", weights)
        self.register_buffer("tiles", table)

    def quantised_mm(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]; activations quantised per super-block inside the call (Q8_K)
        dtype = x.dtype
        x, out = kernel_buffers(x, self.out_features, self.float_output)
        self.lib.kquant_linear(
            self.weights.data_ptr(),
            self.tiles.data_ptr(),
            self.out_features,
            self.in_features,
            x.data_ptr(),
            int(x.dtype == torch.bfloat16),
            x.shape[0],
            out.data_ptr(),
            int(out.dtype == torch.bfloat16),
        )
        return out if self.float_output or out.dtype == dtype else out.to(dtype)
