"""Weight-only quantised linears: exact on Q4_1-shaped weights, and the same answer from either kernel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tokenyard.engine.modeling import quant
from tokenyard.engine.modeling.quant import Int4Linear, Int8Linear
from tokenyard.engine.modeling.quantize import quantize_linears


def q4_1_grid_linear(out_features: int, in_features: int) -> nn.Linear:
    """A linear layer whose weights are what a GGUF Q4_1 tensor dequantises to: d * q + m per 32."""
    generator = torch.Generator().manual_seed(0)
    groups = in_features // 32
    q = torch.randint(0, 16, (out_features, groups, 32), generator=generator).float()
    q[..., 0], q[..., 1] = 0, 15  # each block spans its whole grid, as Q4_1's quantiser makes it
    d = torch.rand(out_features, groups, 1, generator=generator) * 0.01 + 0.001
    m = -torch.rand(out_features, groups, 1, generator=generator) * 0.1
    linear = nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        linear.weight.copy_((d * q + m).reshape(out_features, in_features))
    return linear


def test_int4_reproduces_q4_1_weights() -> None:
    linear = q4_1_grid_linear(64, 128)
    layer = Int4Linear(linear, dense=False)
    x = torch.randn(3, 128)
    # float32 activations and scales: only float rounding separates the kernel from the dense product
    torch.testing.assert_close(layer(x), linear(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_quantised_and_dense_kernels_agree(cls: type[nn.Module]) -> None:
    linear = q4_1_grid_linear(64, 128).to(torch.bfloat16)
    layer = cls(linear)
    rows = torch.randn(quant.QUANTISED_MAX_ROWS + 4, 128, dtype=torch.bfloat16)
    many = layer(rows)  # more rows than the threshold: the dense weight
    few = torch.cat([layer(rows[i : i + 1]) for i in range(rows.shape[0])])  # one row: the quantised kernel
    scale = float(many.float().abs().max())
    assert float((many.float() - few.float()).abs().max()) < 0.05 * scale
    assert torch.equal(many, linear(rows))


def test_with_torch_kernels_the_output_projection_stays_dense() -> None:
    model = nn.Module()
    model.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 24))
    model.lm_head = nn.Linear(64, 96, bias=False)
    quantize_linears(model, "int4", use_native=False)
    assert isinstance(model.body[0], Int4Linear)
    assert isinstance(model.body[2], Int8Linear)  # 24 outputs: a shape the int4 kernel cannot tile
    assert isinstance(model.lm_head, nn.Linear)
    with pytest.raises(ValueError, match="int3"):
        quantize_linears(model, "int3")


def test_without_dense_copy_the_quantised_kernel_serves_every_batch() -> None:
    layer = Int8Linear(q4_1_grid_linear(32, 64), dense=False)
    assert layer.dense is None
    assert layer(torch.randn(quant.QUANTISED_MAX_ROWS + 8, 64)).shape == (quant.QUANTISED_MAX_ROWS + 8, 32)
