"""The native kernels' thread pool (engine/native/pool.cpp): same results at any thread count, no stalls.

Skipped, with the reason, where the native kernels cannot be built.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.blockq import BlockQLinear

REASON = native.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")


def _layer(out_features: int, in_features: int, bits: int) -> BlockQLinear:
    torch.manual_seed(out_features + bits)
    return BlockQLinear(nn.Linear(in_features, out_features).to(torch.bfloat16), bits, dense=False)


@pytest.mark.parametrize("bits", [4, 8])
def test_two_threads_give_the_same_bits_as_one(bits: int) -> None:
    lib = native.kernels()
    assert lib is not None
    layer = _layer(1024, 256, bits)  # 64 tiles: many chunks for two threads
    x = torch.randn(37, 256).to(torch.bfloat16)
    try:
        lib.native_set_threads(1)
        alone = layer(x)
        lib.native_set_threads(2)
        shared = [layer(x) for _ in range(3)]
    finally:
        lib.native_set_threads(1)
    # each output tile is computed whole by one thread, in the same order: bit for bit equal
    assert all(torch.equal(alone, out) for out in shared)


def test_many_small_regions_in_a_row_finish_and_resizing_works() -> None:
    lib = native.kernels()
    assert lib is not None
    layer = _layer(64, 64, 4)
    x = torch.randn(2, 64).to(torch.bfloat16)
    try:
        lib.native_set_threads(1)
        expected = layer(x)
        for threads in (2, 3, 2):
            lib.native_set_threads(threads)
            assert lib.native_threads() == threads
            started = time.monotonic()
            for _ in range(2000):  # each call one region; workers spin, sleep and wake in between
                out = layer(x)
                if not torch.equal(out, expected):
                    raise AssertionError(f"differs at {threads} threads")
            assert time.monotonic() - started < 60
            time.sleep(0.01)  # long enough for the workers to fall asleep: the next region wakes them
            assert torch.equal(layer(x), expected)
    finally:
        lib.native_set_threads(1)
    assert lib.native_threads() == 1
