"""The native block-quantised kernels: layout, exactness on GGUF grids, and agreement with dense products.

Skipped, with the reason, where the kernels cannot be built (no AVX512-VNNI, no C++ compiler).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.engine.test_quant import q4_1_grid_linear
from tokenyard.engine import native
from tokenyard.engine.modeling.blockq import BLOCKQ_MAX_ROWS, BlockQLinear, pack_blockq, quantise_blocks
from tokenyard.engine.modeling.quantize import quantize_linears

REASON = native.unavailable_reason()
needs_native = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")


def dequantised(linear: nn.Linear, bits: int) -> torch.Tensor:
    u, d, m = quantise_blocks(linear.weight.detach(), bits)
    return d.repeat_interleave(32, dim=1) * u.float() + m.repeat_interleave(32, dim=1)  # [N, K]


def test_quantise_blocks_is_exact_on_q4_1_weights() -> None:
    linear = q4_1_grid_linear(32, 96)
    torch.testing.assert_close(dequantised(linear, 4), linear.weight.detach(), atol=1e-6, rtol=0)


def test_q8_blocks_keep_their_offset_and_scale() -> None:
    weight = torch.tensor([[1.27, -0.5, 0.0] + [0.01] * 29])  # one row, one block
    u, d, m = quantise_blocks(weight, 8)
    assert u[0, :3].tolist() == [255, 78, 128]  # q + 128 with q = round(w / d), d = 1.27 / 127
    torch.testing.assert_close(m, -128 * d)


def test_pack_puts_four_channels_of_sixteen_rows_in_each_vector() -> None:
    n, k = 16, 32
    u = torch.arange(n * k).reshape(n, k) % 256
    weights, scales = pack_blockq(u, torch.ones(n, 1), torch.zeros(n, 1), 8)
    vectors = weights.reshape(8, 16, 4)  # [channel group j, row, channel]
    assert vectors[2, 5].tolist() == u[5, 8:12].tolist()
    packed4, _ = pack_blockq(u % 16, torch.ones(n, 1), torch.zeros(n, 1), 4)
    pairs = packed4.reshape(4, 16, 4)  # [pair j, row, channel]: group 2j low nibble, 2j+1 high
    assert int(pairs[1, 3, 2]) == int(u[3, 10] % 16) | (int(u[3, 14] % 16) << 4)
    assert scales.dtype == torch.float16 and scales.numel() == 2 * n


@needs_native
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_the_dequantised_product(bits: int, rows: int, dtype: torch.dtype, kernel_threads: int) -> None:
    linear = q4_1_grid_linear(48, 96).to(dtype)
    layer = BlockQLinear(linear, bits, dense=False)
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows)).to(dtype)
    out = layer(x)
    expected = x.float() @ dequantised(linear, bits).T
    assert out.dtype == dtype and out.shape == (rows, 48)
    # activations are taken as two int8 parts per block of 32 (~15 bits; blockq.cpp's kFine): what is left
    # is the output's rounding (bfloat16) and float32 sums
    tolerance = 0.006 if dtype == torch.bfloat16 else 0.002
    assert float((out.float() - expected).abs().max()) < tolerance * float(expected.abs().max())


@needs_native
def test_output_projection_returns_float32_and_switches_to_dense_for_many_rows() -> None:
    linear = q4_1_grid_linear(32, 64).to(torch.bfloat16)
    head = BlockQLinear(linear, 8, float_output=True)
    assert head(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.float32
    many = torch.randn(BLOCKQ_MAX_ROWS + 1, 64, dtype=torch.bfloat16)
    assert torch.equal(head(many), linear(many))  # the dense weight, bit for bit


@needs_native
def test_quantize_linears_uses_native_blocks_for_layers_and_output() -> None:
    model = nn.Module()
    model.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 24))
    model.lm_head = nn.Linear(64, 96, bias=False)
    quantize_linears(model, "int4")
    assert isinstance(model.body[0], BlockQLinear) and model.body[0].bits == 4
    assert not isinstance(model.body[2], BlockQLinear)  # 24 outputs: not a multiple of 16 rows
    assert isinstance(model.lm_head, BlockQLinear) and model.lm_head.bits == 8


def test_unavailable_reason_names_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENYARD_NATIVE", "0")
    assert native.unavailable_reason() == "TOKENYARD_NATIVE=0"


def test_a_failing_compiler_turns_the_kernels_off_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    monkeypatch.setenv("TOKENYARD_NATIVE_CACHE", str(tmp_path))
    if native.unavailable_reason() is not None:
        pytest.skip(f"the kernels are off here before any build: {native.unavailable_reason()}")
    native.kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="tokenyard.engine.native"):
            assert native.kernels() is None
        assert "native kernels off (the compiler failed" in caplog.text
        assert list(tmp_path.glob("*.so")) == []
    finally:
        native.kernels.cache_clear()  # the next caller builds (or loads) the real library again


@needs_native
@pytest.mark.parametrize("bits", [4, 8])
def test_dequantised_rows_are_the_blocks_values(bits: int) -> None:
    linear = q4_1_grid_linear(48, 96)
    layer = BlockQLinear(linear, bits, dense=False)
    u, d, m = quantise_blocks(linear.weight.detach(), bits)
    d, m = (scale.half().float().repeat_interleave(32, dim=1) for scale in (d, m))  # stored as float16
    rows = torch.tensor([0, 17, 47, 5, 17])
    expected = (d * u.float() + m)[rows]
    assert torch.equal(layer.dequantise_rows(rows), expected)
    # the embedding's lookup: rounded to bfloat16 in the kernel exactly as torch rounds
    assert torch.equal(layer.dequantise_rows(rows, torch.bfloat16), expected.to(torch.bfloat16))
    assert layer.dequantise_rows(torch.tensor([], dtype=torch.long)).shape == (0, 96)


@needs_native
@pytest.mark.parametrize("bad", [-1, 48])
def test_dequantised_rows_refuse_ids_outside_the_matrix(bad: int) -> None:
    layer = BlockQLinear(q4_1_grid_linear(48, 96), 8, dense=False)
    with pytest.raises(IndexError):
        layer.dequantise_rows(torch.tensor([3, bad]))
