"""The engine's own CPU kernels (`*.cpp` here), compiled on first use and loaded with ctypes.

Why native code: at decode batch sizes a step is small operations, where torch's eager kernels spend
more time on overhead and generality than on the work (docs/engine.md, "Native kernels"):
- `blockq.cpp`: weight-only 4/8-bit linear layers. torch's int4/int8 kernels on this CPU are bound by
  arithmetic, not memory (int8 is no faster than int4); this one quantises activations to int8 per
  block of 32, as llama.cpp does, and multiplies with AVX512-VNNI, which is faster at decode sizes.
- `kquant.cpp`: the same for llama.cpp's K-quant blocks (Q4_K, Q5_K, Q6_K) at the file's own
  precision, activations quantised per super-block of 256 as llama.cpp's Q8_K.
- `attention.cpp`: decode attention read straight from the paged cache through each sequence's slot
  table, instead of gathering every layer's K/V into a padded copy first.
- `norm.cpp`: RMS norm in one call, rounded as the reference rounds it (torch needs four ops).
- `argmax.cpp`: the greedy token of each row of logits, as torch.argmax picks it, in a fraction of its time.
- `dense.cpp`: dense bfloat16 layers for few rows (AVX512-BF16), where torch's matmul reads weights slowly.
- `decode_layers.cpp`: every decoder layer of a llama model for a decode-only step in one call, so a
  small step no longer pays Python and torch dispatch for each of its many small ops.
- `pool.cpp`: a small persistent thread pool the kernels above split their rows over
  (`native_set_threads`), with no wake-up per op as OpenMP's sleeping threads need.

Why ctypes and not a torch extension: the library is plain C ABI with no torch headers, so it builds
quickly with the system's g++ and cannot break with torch's ABI. `abi.py` declares its functions and
mirrors the structures it reads, checked against the library's own sizes at load.
(docs/engine.md, "Measurements behind the code", has the figures behind these choices.)
It is compiled once per source and flag set into `~/.cache/tokenyard/native` (or
`$TOKENYARD_NATIVE_CACHE`), atomically, so concurrent workers never load a half-written file.

Where the CPU lacks AVX512-VNNI, no C++ compiler is found, or `TOKENYARD_NATIVE=0`, `kernels()` is
None and the engine uses torch's kernels; the reason is logged once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from tokenyard.engine.native import abi

logger = logging.getLogger(__name__)

SOURCES = sorted(Path(__file__).parent.glob("*.cpp"))
HEADERS = sorted(Path(__file__).parent.glob("*.h"))
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "f16c", "fma")
COMPILE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
COMPILE_FLAGS += ["-mavx512vnni", "-mf16c", "-mfma", "-pthread"]


@functools.cache  # read once: the model loader asks per layer
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16_dot() -> bool:
    """Whether the CPU has AVX512-BF16, which the dense bfloat16 kernel (dense.cpp) needs."""
    return "avx512_bf16" in cpu_flags()


def unavailable_reason() -> str | None:
    """Why the native kernels cannot be used here, or None when they can."""
    if os.environ.get("TOKENYARD_NATIVE", "1") == "0":
        return "TOKENYARD_NATIVE=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"{platform.machine()} is not x86-64"
    missing = [flag for flag in CPU_FLAGS if flag not in cpu_flags()]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    if _compiler() is None:
        return "no C++ compiler (g++ or $CXX) found"
    return None


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (with the reason logged once) where it cannot be used."""
    reason = unavailable_reason()
    if reason is None:
        try:
            return _load(_build())
        except subprocess.CalledProcessError as exc:
            errors = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            reason = f"the compiler failed: {errors[-1] if errors else exc}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"building the kernels failed: {exc}"
    logger.warning("native kernels off (%s): torch's kernels run everything", reason)
    return None


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _cache_dir() -> Path:
    configured = os.environ.get("TOKENYARD_NATIVE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "tokenyard" / "native"


def _build() -> Path:
    compiler = _compiler()
    assert compiler is not None
    digest = hashlib.sha256(" ".join([compiler, *COMPILE_FLAGS]).encode())
    for source in SOURCES + HEADERS:
        digest.update(source.read_bytes())
    target = _cache_dir() / f"kernels-{digest.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *COMPILE_FLAGS, *map(str, SOURCES), "-o", str(built)]
        subprocess.run(command, check=True, capture_output=True, timeout=300)
        os.replace(built, target)  # atomic: a concurrent build just replaces it with the same bytes
    logger.info("native kernels built: %s", target)
    return target


def _load(path: Path) -> ctypes.CDLL:
    return abi.bind(ctypes.CDLL(str(path)))  # raises AbiMismatch: a library that disagrees must not run
