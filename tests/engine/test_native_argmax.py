"""The native greedy pick (engine/native/argmax.cpp) against torch.argmax, index for index.

Skipped, with the reason, where the kernels cannot be built.
"""

from __future__ import annotations

import pytest
import torch

from tokenyard.engine import native
from tokenyard.engine.sampling import greedy_tokens

REASON = native.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")


def native_argmax(logits: torch.Tensor) -> list[int]:
    lib = native.kernels()
    assert lib is not None
    out = torch.full((logits.shape[0],), -7, dtype=torch.int64)
    lib.rows_argmax(logits.data_ptr(), logits.shape[0], logits.shape[1], out.data_ptr())
    return out.tolist()


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 7), (3, 16), (5, 33), (64, 4099)])
def test_random_rows_pick_what_torch_picks(rows: int, cols: int, kernel_threads: int) -> None:
    logits = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows * cols))
    assert native_argmax(logits) == logits.argmax(dim=-1).tolist()


def test_ties_masks_and_nans_pick_what_torch_picks(kernel_threads: int) -> None:
    cols = 50  # three full vectors and a tail
    logits = torch.zeros(7, cols)
    logits[0, [3, 20, 49]] = 5.0  # equal maxima: the first
    logits[1] = float("-inf")  # every token masked: torch picks 0
    logits[2, 45] = 1.0  # the maximum in the tail
    logits[3, 30] = float("nan")  # a NaN wins, as in torch
    logits[3, 10] = 9.0
    logits[4, 48] = float("nan")  # a NaN in the tail, after a larger value
    logits[4, 2] = 9.0
    logits[5, [17, 40]] = float("nan")  # the first NaN
    logits[6] = float("-inf")
    logits[6, 49] = -1e30  # the one finite value, last
    assert native_argmax(logits) == logits.argmax(dim=-1).tolist() == [3, 0, 45, 30, 48, 17, 49]


def test_greedy_tokens_takes_any_layout() -> None:
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))
    view = logits.T.contiguous().T  # same values, not contiguous by rows
    assert greedy_tokens(view) == greedy_tokens(logits) == logits.argmax(dim=-1).tolist()
    assert greedy_tokens(logits.double()) == logits.argmax(dim=-1).tolist()  # not float32: torch's own
