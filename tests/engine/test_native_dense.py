"""The native dense bfloat16 kernel (engine/native/dense.cpp) against torch's bfloat16 matmul.

Skipped, with the reason, where the kernels cannot be built or the CPU lacks AVX512-BF16.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tokenyard.engine import native

REASON = native.unavailable_reason() or (None if native.has_bf16_dot() else "the CPU lacks AVX512-BF16")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native dense kernel unavailable: {REASON}")


@pytest.mark.parametrize("rows", [1, 3, 8, 11])
@pytest.mark.parametrize("float_output", [False, True])
def test_dense_kernel_matches_torch(rows: int, float_output: bool, kernel_threads: int) -> None:
    lib = native.kernels()
    assert lib is not None
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(40, 96, generator=generator).to(torch.bfloat16)  # any row count; K a multiple of 32
    x = torch.randn(rows, 96, generator=generator).to(torch.bfloat16)
    out = torch.empty(rows, 40, dtype=torch.float32 if float_output else torch.bfloat16)
    lib.dense_bf16_linear(weight.data_ptr(), 40, 96, x.data_ptr(), rows, out.data_ptr(), int(not float_output))
    expected = x.float() @ weight.float().T  # bfloat16 products are exact in float32
    if float_output:
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)
    else:  # rounded once, like torch's own bfloat16 matmul
        torch.testing.assert_close(out, F.linear(x, weight), atol=0, rtol=2**-7)
