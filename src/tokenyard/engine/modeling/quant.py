"""Weight-only int8 and int4 linear layers on torch's own CPU kernels, chosen per step by its size.

int8: one symmetric scale per output channel, `aten._weight_int8pack_mm`. int4: asymmetric per group
of 32 input channels, packed by `aten._convert_weight_to_int4pack_for_cpu` and multiplied by
`aten._weight_int4pack_mm_for_cpu`, with gpt-fast's convention w = (q - 8) * scale + zero. That is
exactly GGUF's Q4_1 layout (w = d * q + m per block of 32), so a model converted from a Q4_1 file
is re-quantised without loss: every group's min and max are grid points (see docs/engine.md).

Which kernel is fastest depends on how many tokens a step multiplies (docs/engine.md has the table):
the quantised kernels read 2-4x fewer bytes and win clearly for a few rows (decode at small batch),
while bfloat16's matmul wins from about 12 rows on (large batches, prompt chunks: int4 is 4x slower
at 64 rows). So each layer keeps its dense weight too and picks per call (`QUANTISED_MAX_ROWS`).
That costs memory (dense + quantised), which is the trade for the fastest path at every batch size;
`dense=False` drops the dense copy where memory matters more.

The output projection is left dense: in the GGUF files it comes from (Q8_0/Q6_K embeddings) its
groups are not int4 groups, and re-quantising it cost more greedy agreement than all the layers
together (benchmarks/quality.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INT4_GROUP_SIZE = 32
INT4_INNER_K_TILES = 2
QUANTISED_MAX_ROWS = 12  # measured crossover with bfloat16 on this CPU's layer shapes (docs/engine.md)


class QuantisedLinear(nn.Module):
    """A linear layer with a quantised kernel for few rows and, optionally, the dense one for many."""

    dense: torch.Tensor | None
    max_rows = QUANTISED_MAX_ROWS  # the quantised kernel up to this many rows, the dense weight above

    def __init__(self, linear: nn.Linear, *, dense: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("dense", linear.weight.detach() if dense else None)  # [N, K], the model's dtype
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]
        if self.dense is not None and x.shape[0] > self.max_rows:
            return F.linear(x, self.dense, self.bias)
        out = self.quantised_mm(x)
        return out if self.bias is None else out + self.bias

    def quantised_mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Int8Linear(QuantisedLinear):
    """y = x @ (q * scale).T + bias, with q int8 [N, K] and scale [N]."""

    def __init__(self, linear: nn.Linear, *, dense: bool = True) -> None:
        super().__init__(linear, dense=dense)
        weight = linear.weight.detach().float()  # [N, K]
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # [N]
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))

    def quantised_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scale.to(x.dtype))


class Int4Linear(QuantisedLinear):
    """Group-wise asymmetric 4-bit weights; the kernel needs K divisible by the group size and N by 16."""

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE, *, dense: bool = True) -> None:
        super().__init__(linear, dense=dense)
        weight = linear.weight.detach().float()  # [N, K]
        n, k = weight.shape
        groups = weight.reshape(n, k // group_size, group_size)  # [N, G, g]
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # [N, G]
        scale = ((high - low) / 15).clamp(min=1e-8)
        q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = low + scale * 8  # so that w = (q - 8) * scale + zero
        self.group_size = group_size
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, INT4_INNER_K_TILES)
        self.register_buffer("packed", packed)
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # [G, N, 2]
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(linear.weight.dtype))

    def quantised_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, self.packed, self.group_size, self.scales_and_zeros.to(x.dtype)
        )
