"""The kernel library's C ABI (engine/native/abi.py against kernels.h): structures checked at load.

Skipped, with the reason, where the native kernels cannot be built.
"""

from __future__ import annotations

import ctypes

import pytest

from tokenyard.engine import native
from tokenyard.engine.native.abi import AbiMismatch, NativeLayer, NativeLinear, NativeShape, check_size

REASON = native.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")


def test_the_structures_are_as_large_as_the_library_says() -> None:
    lib = native.kernels()
    assert lib is not None  # loading checked the sizes already
    assert ctypes.sizeof(NativeLayer) == lib.native_layer_size() == 2 * 8 + 4 * ctypes.sizeof(NativeLinear) + 2 * 8
    assert ctypes.sizeof(NativeShape) == lib.native_shape_size() == 6 * 8


def test_a_structure_that_differs_from_the_library_fails_loudly() -> None:
    lib = native.kernels()
    assert lib is not None

    class LayerWithAnExtraField(ctypes.Structure):
        _fields_ = [*NativeLayer._fields_, ("extra", ctypes.c_int64)]

    with pytest.raises(AbiMismatch, match=r"LayerWithAnExtraField is 232 bytes here and 224 in the kernel library"):
        check_size(LayerWithAnExtraField, lib.native_layer_size)


def test_decode_layers_takes_only_the_layer_structures() -> None:
    lib = native.kernels()
    assert lib is not None
    shape = NativeShape(64, 2, 1, 32, 96, 16)
    # An address where the table of structures goes (the old int64 rows) is refused before any call.
    with pytest.raises(ctypes.ArgumentError):
        lib.decode_layers(0, 12345, 1, ctypes.byref(shape), None, 0, None, None, None, 0, None, 1e-5, 1.0)
