"""Settings left at `auto` turned into concrete choices from the model file and the machine.

`make serve` passes no flags, so these choices are what most users run:
- **quantization** `auto`: on a CPU where the native kernels load, the precision the GGUF file was
  made in, where the engine has kernels for it: Q4_1 -> int4, Q8_0 -> int8 (the same grids, so the
  weights are the file's own, without loss), the K-quant and other 32-block files -> `gguf` (the
  file's blocks read as they are, modeling/gguf_weights.py); otherwise `none` (the model's dtype;
  bfloat16 on CUDA).
- **max_batch_size** unset: on a CPU 32 sequences per core (64 on two cores: a decode step of 64
  sequences still gains tokens/s over 32 on this kind of CPU, docs/engine.md), between 16 and 256;
  on CUDA 256. The KV budget then follows it (`kv_budget.py`).
Embedding models take none of the chat worker's settings that do not apply to them (quantization, a
chat context length): `tokenyard serve` hands one `worker` section to both workers.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

CPU_SEQUENCES_PER_CORE = 32
CPU_MAX_BATCH = (16, 256)
CUDA_MAX_BATCH = 256
# GGUF `general.file_type` values (llama.cpp's `llama_ftype`) and the mode that keeps each exactly.
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 32: "BF16"}
GGUF_FILE_TYPES |= {14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K"}
EXACT_QUANTIZATION = {"Q4_1": "int4", "Q8_0": "int8"}
_FILE_BLOCKS = ("Q4_0", "Q5_0", "Q5_1", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
EXACT_QUANTIZATION |= {name: "gguf" for name in _FILE_BLOCKS}  # read from the file as they are
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_HEADER_KEYS = 64  # general.* keys come first; a file whose header lacks it within these is "unknown"


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_max_batch_size(device_type: str, cpus: int | None = None) -> int:
    """How many sequences may run at once when `max_batch_size` is not set (see the module docstring)."""
    if device_type == "cuda":
        return CUDA_MAX_BATCH
    low, high = CPU_MAX_BATCH
    return max(low, min(high, CPU_SEQUENCES_PER_CORE * (cpus or usable_cpus())))


def auto_quantization(gguf_type: str | None, *, device_type: str, native_kernels: bool) -> str:
    """`quantization: auto` for a chat model converted from a GGUF of `gguf_type` (None: not a GGUF)."""
    if device_type != "cpu" or not native_kernels or gguf_type is None:
        return "none"
    return EXACT_QUANTIZATION.get(gguf_type, "none")


def gguf_file_type(path: Path) -> str | None:
    """The `general.file_type` of a GGUF file ("Q4_1", ...), read from its header; None if absent or unknown.

    Only the header's first keys are read (microseconds); gguf's own reader maps every tensor (seconds)."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                return None
            _version, _tensors, keys = struct.unpack("<IQQ", handle.read(20))
            for _ in range(min(keys, _MAX_HEADER_KEYS)):
                key = _read_string(handle)
                (kind,) = struct.unpack("<I", handle.read(4))
                if key == "general.file_type" and kind in _SCALARS:
                    (value,) = struct.unpack("<" + _SCALARS[kind], handle.read(struct.calcsize(_SCALARS[kind])))
                    return GGUF_FILE_TYPES.get(int(value), f"type {int(value)}")
                _skip_value(handle, kind)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _read_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", errors="replace")


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        handle.seek(struct.calcsize(_SCALARS[kind]), 1)
    elif kind == _STRING:
        (length,) = struct.unpack("<Q", handle.read(8))
        handle.seek(length, 1)
    elif kind == _ARRAY:
        item, count = struct.unpack("<IQ", handle.read(12))
        if item in _SCALARS:
            handle.seek(count * struct.calcsize(_SCALARS[item]), 1)
        else:
            for _ in range(count):
                _skip_value(handle, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
