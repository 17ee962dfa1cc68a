"""The kernel library's C ABI as ctypes sees it: every function's signature and the structures it reads.

`kernels.h` is the C side. The structures that `decode_layers` and `decode_step` read (a layer's
norms, four linear layers and cache pointers; the model's shape; its embedding, rotary table, final
norm and head) are written here once, as `ctypes.Structure`s with the
same fields in the same order, and `bind` compares their sizes with the library's own `sizeof` before
anything calls it: a field added on one side only then stops the load with `AbiMismatch` instead of
shifting every later field under the C code's feet.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

# NativeLinear.kind: which kernel runs the layer
LINEAR_BLOCKQ4, LINEAR_BLOCKQ8 = 4, 8  # native blocks (blockq.cpp); `kind` is their bit count
# plus BLOCKQ_ONE_PART (modeling/blockq.py) for a GGUF file's blocks, with llama.cpp's activations
LINEAR_DENSE_BF16 = 16  # dense bfloat16 weights (dense.cpp)
LINEAR_KQUANT = 256  # llama.cpp's K-quant blocks (kquant.cpp), the tile table in `scales`


class AbiMismatch(RuntimeError):
    """The loaded library's structures are not the ones this module describes."""


class NativeLinear(ctypes.Structure):
    """One linear layer: weights, scales (the block kernel's d and m, K-quant's tile table, or null),
    kind (above), output and input features, bias (or null)."""

    _fields_ = [
        ("weights", ctypes.c_void_p),
        ("scales", ctypes.c_void_p),
        ("kind", ctypes.c_int64),
        ("n", ctypes.c_int64),
        ("k", ctypes.c_int64),
        ("bias", ctypes.c_void_p),
    ]


class NativeLayer(ctypes.Structure):
    """One decoder layer: its two norms' weights, four linears, and its K and V cache [Hkv, slots, D]."""

    _fields_ = [
        ("input_norm", ctypes.c_void_p),
        ("post_norm", ctypes.c_void_p),
        ("qkv", NativeLinear),
        ("o", NativeLinear),
        ("gate_up", NativeLinear),
        ("down", NativeLinear),
        ("k_cache", ctypes.c_void_p),
        ("v_cache", ctypes.c_void_p),
    ]


class NativeShape(ctypes.Structure):
    """The model's sizes, and the KV cache's slots per head."""

    _fields_ = [
        ("hidden", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("kv_heads", ctypes.c_int64),
        ("dim", ctypes.c_int64),
        ("intermediate", ctypes.c_int64),
        ("num_slots", ctypes.c_int64),
    ]


class NativeModel(ctypes.Structure):
    """What `decode_step` reads beside the layers: the embedding (a table, or the tied head's blocks), the
    rotary table, the final norm, the output projection (weights null when Python runs it), whether it
    writes float32 straight, and the paged cache's block size and block count."""

    _fields_ = [
        ("embedding", ctypes.c_void_p),
        ("embedding_rows", NativeLinear),
        ("vocab", ctypes.c_int64),
        ("rope", ctypes.c_void_p),
        ("max_positions", ctypes.c_int64),
        ("final_norm", ctypes.c_void_p),
        ("head", NativeLinear),
        ("head_float", ctypes.c_int64),
        ("block_size", ctypes.c_int64),
        ("num_blocks", ctypes.c_int64),
    ]


_ptr, _i64, _i32, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_layers, _shape, _model = ctypes.POINTER(NativeLayer), ctypes.POINTER(NativeShape), ctypes.POINTER(NativeModel)
_SIGNATURES: dict[str, tuple[list[Any], Any]] = {  # name: (argument types, result type)
    "native_layer_size": ([], _i64),
    "native_shape_size": ([], _i64),
    "native_model_size": ([], _i64),
    "native_set_threads": ([_i32], None),
    "native_threads": ([], _i32),
    "paged_decode_attention": (
        [_i32, _ptr, _ptr, _ptr, _i64, _ptr, _i64, _ptr, _i64, _i64, _i64, _i64, _f32, _ptr],
        None,
    ),
    "blockq_linear": ([_i32, _ptr, _ptr, _i64, _i64, _ptr, _i32, _i64, _ptr, _i32], None),
    "blockq_rows": ([_i32, _ptr, _ptr, _i64, _i64, _ptr, _i64, _ptr, _i32], _i32),
    "kquant_linear": ([_ptr, _ptr, _i64, _i64, _ptr, _i32, _i64, _ptr, _i32], None),
    "dense_bf16_linear": ([_ptr, _i64, _i64, _ptr, _i64, _ptr, _i32], None),
    "rows_argmax": ([_ptr, _i64, _i64, _ptr], None),
    "rms_norm": ([_i32, _ptr, _ptr, _i64, _i64, _f32, _ptr], None),
    "decode_layers": ([_i32, _layers, _i64, _shape, _ptr, _i64, _ptr, _ptr, _ptr, _i64, _ptr, _f32, _f32], None),
    "decode_step": (
        [_i32, _layers, _i64, _shape, _model, _ptr, _ptr, _ptr, _i64, _i64, _f32, _f32, _ptr, _ptr],
        _i32,
    ),
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare every function's signature on `lib`, then check the structures (raises `AbiMismatch`)."""
    for name, (argtypes, restype) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    check_size(NativeLayer, lib.native_layer_size)
    check_size(NativeShape, lib.native_shape_size)
    check_size(NativeModel, lib.native_model_size)
    return lib


def check_size(structure: type[ctypes.Structure], native_size: Callable[[], int]) -> None:
    """Raise `AbiMismatch` unless the structure is as large as the library's sizeof says its C twin is."""
    ours, theirs = ctypes.sizeof(structure), int(native_size())
    if ours != theirs:
        raise AbiMismatch(
            f"{structure.__name__} is {ours} bytes here and {theirs} in the kernel library: "
            "engine/native/abi.py and kernels.h describe different structures"
        )
