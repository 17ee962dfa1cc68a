"""Build llama.cpp's `llama-server` (or its tools) from the llama-cpp-python sdist, once, into a cache folder.

No llama.cpp code lives in this repository: the sdist (which vendors llama.cpp) is fetched with pip's
ordinary client, unpacked and compiled with the flags docs/benchmarks.md lists. Later runs find the
binary in the cache and skip all of it. Run alone to build ahead of a benchmark:

    .venv/bin/python benchmarks/llama_build.py [--cache .cache/llama-server]

`--tools` builds llama-quantize, llama-tokenize and llama-perplexity instead (what
benchmarks/kquant_perplexity.py runs), into their own cache folder (`.cache/llama-tools-VERSION`): they
compile much of llama.cpp's common code that the server does not, ~20-45 min on two shared cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# The peer every figure in docs/benchmarks.md and the issues was measured against: a newer llama.cpp
# is another peer (its speed on this CPU differs), so a ratio is only comparable at the same version.
LLAMA_CPP_PYTHON = "0.3.36"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / f"llama-server-{LLAMA_CPP_PYTHON}"
TOOLS_CACHE = DEFAULT_CACHE.parent / f"llama-tools-{LLAMA_CPP_PYTHON}"
SERVER_TARGETS = ["llama-server"]
TOOL_TARGETS = ["llama-quantize", "llama-tokenize", "llama-perplexity"]

# Network features off: this machine reaches only package registries, and LLAMA_USE_PREBUILT_UI (on by
# default) would try to download a web UI at configure time.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    # Some virtual machines advertise AMX in CPUID but do not let a process use its tiles, and
    # llama.cpp's AMX matmul then crashes at the first batch (seen on this project's CI machines);
    # AVX-512 and VNNI stay on. tokenyard's own kernels use no AMX either.
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    # Static: the binary is moved out of the temporary build folder, where shared libraries would stay.
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def binary_path(cache: Path, target: str = "llama-server") -> Path:
    """Where a finished binary lives; the bin folder's presence means the build is done."""
    return cache / "bin" / target


def _download_sdist(dest: Path) -> Path:
    # `--no-binary llama-cpp-python`, not `:all:`: pip reads the sdist's metadata in a build environment,
    # and `:all:` would compile every build tool (scikit-build-core, hatchling...) from source first.
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    package = f"llama-cpp-python=={LLAMA_CPP_PYTHON}"
    subprocess.run([*pip, "--no-binary", "llama-cpp-python", "--dest", str(dest), package], check=True)
    return next(dest.glob("llama_cpp_python-*.tar.gz"))


def _unpack(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    return next(p for p in dest.iterdir() if p.is_dir()) / "vendor" / "llama.cpp"


def build(cache: Path = DEFAULT_CACHE, jobs: int = 2, targets: list[str] = SERVER_TARGETS) -> Path:
    """Return the path of the first built target (`llama-server`: ~4 min on 2 cores), building them
    first if the cache lacks them."""
    target = binary_path(cache, targets[0])
    if all(binary_path(cache, name).exists() for name in targets):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        source = _unpack(_download_sdist(Path(work)), Path(work))
        build_dir = Path(work) / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", *targets, f"-j{jobs}"], check=True)
        if (source / "LICENSE").exists():
            shutil.copy(source / "LICENSE", cache / "LICENSE")
        (build_dir / "bin").rename(cache / "bin.tmp")
    # Renamed into place last so an interrupted build never looks finished.
    (cache / "bin.tmp").rename(cache / "bin")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = f"{DEFAULT_CACHE}, with --tools {TOOLS_CACHE}"
    parser.add_argument("--cache", type=Path, help=f"Cache folder (default: {default}).")
    parser.add_argument("--jobs", type=int, default=2, help="Parallel compile jobs (default: %(default)s).")
    parser.add_argument("--tools", action="store_true", help=f"Build {', '.join(TOOL_TARGETS)} instead of the server.")
    args = parser.parse_args()
    targets = TOOL_TARGETS if args.tools else SERVER_TARGETS
    cache = args.cache or (TOOLS_CACHE if args.tools else DEFAULT_CACHE)
    built = build(cache, args.jobs, targets)
    print(built.parent if args.tools else built)  # --tools: the folder kquant_perplexity.py's --llama-bin takes


if __name__ == "__main__":
    main()
