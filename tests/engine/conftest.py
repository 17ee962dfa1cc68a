"""Fixtures for the engine's tests: the native kernels' thread count."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenyard.engine import native


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def kernel_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Runs the test with the native kernels' pool at 1 and at 2 threads (back to 1 afterwards)."""
    lib = native.kernels()
    if lib is None:
        yield 1
        return
    lib.native_set_threads(request.param)
    try:
        assert lib.native_threads() == request.param
        yield request.param
    finally:
        lib.native_set_threads(1)
