"""Weight-only int8 and int4 linear layers on torch's own CPU kernels.

int8: one symmetric scale per output channel, `aten._weight_int8pack_mm` (FIELD-NOTES: ~4x faster
than a bfloat16 matmul at batch 1 on this CPU, slower at batch 64). int4: asymmetric per group of
`group_size` input channels, packed by `aten._convert_weight_to_int4pack_for_cpu` and multiplied by
`aten._weight_int4pack_mm_for_cpu`, with gpt-fast's convention w = (q - 8) * scale + zero.
Activations stay in the model's dtype; only the weights are quantised.
"""

from __future__ import annotations

import torch
from torch import nn

INT4_GROUP_SIZE = 32
INT4_INNER_K_TILES = 2


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias, with q int8 [N, K] and scale [N]."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # [N, K]
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # [N]
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]
        out = torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scale.to(x.dtype))
        return out if self.bias is None else out + self.bias


class Int4Linear(nn.Module):
    """Group-wise asymmetric 4-bit weights; the kernel needs K divisible by the group size and N by 16."""

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE) -> None:
        super().__init__()
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
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, self.packed, self.group_size, self.scales_and_zeros.to(x.dtype)
        )
        return out if self.bias is None else out + self.bias


def quantize_linears(module: nn.Module, method: str) -> None:
    """Replace every `nn.Linear` under `module` (the output projection included) in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _quantized(child, method))
        else:
            quantize_linears(child, method)


def _quantized(linear: nn.Linear, method: str) -> nn.Module:
    if method == "int8":
        return Int8Linear(linear)
    if method == "int4" and linear.in_features % INT4_GROUP_SIZE == 0 and linear.out_features % 16 == 0:
        return Int4Linear(linear)
    if method == "int4":
        return Int8Linear(linear)  # a shape the int4 kernel cannot tile: the closest it can do
    raise ValueError(f"unknown quantization method {method!r}; use int8 or int4")
