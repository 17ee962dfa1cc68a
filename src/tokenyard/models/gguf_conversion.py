"""GGUF files dequantised once into a safetensors folder that transformers and the engine load natively.

The conversion is written to a temporary folder and renamed, under a cross-process lock, so a killed
conversion never leaves a half-written model behind and two workers starting together convert the
file only once. Each converted folder records the GGUF file it came from (`gguf_source`):
`--quantization gguf` reads that file's blocks as they are.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenyard.errors import ModelLoadError

GGUF_SOURCE_FILE = "gguf_source.json"


def gguf_folder_name(path: Path) -> str:
    """A cache folder name that changes when the file at that path changes."""
    absolute = path.resolve()
    stat = absolute.stat()
    digest = hashlib.sha256(f"{absolute}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return f"gguf-{path.stem}-{digest[:10]}"


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise `gguf` once into a safetensors folder at `target`; reuse the folder afterwards."""
    if _is_complete(target):
        _record_source(target, gguf)
        return target
    if not gguf.is_file():
        raise ModelLoadError(f"model file missing: {gguf}; run `make install` or pass --model PATH")
    _check_gguf_magic(gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process converted it while we waited for the lock
            _record_source(target, gguf)
            return target
        print(f"tokenyard: converting {gguf.name} to {target} (first start only) ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        tmp = target.parent / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # left by a conversion that was killed
        try:
            _dequantise_to_folder(gguf, tmp)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelLoadError(f"cannot convert {gguf}: {first}; re-download the file") from exc
        write_gguf_source(tmp, gguf)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete folder someone else left
        os.replace(tmp, target)
        print(f"tokenyard: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return target


def _record_source(folder: Path, gguf: Path) -> None:
    """Folders converted before `--quantization gguf` existed (or whose file moved) learn it on the next start."""
    if gguf.is_file() and gguf_source(folder) != gguf.resolve():
        write_gguf_source(folder, gguf)


def write_gguf_source(folder: Path, gguf: Path) -> None:
    """Record which GGUF file a converted folder came from: `--quantization gguf` reads its blocks."""
    scratch = folder / f".{GGUF_SOURCE_FILE}.{os.getpid()}"
    scratch.write_text(json.dumps({"path": str(gguf.resolve())}))
    os.replace(scratch, folder / GGUF_SOURCE_FILE)  # atomic: workers starting together may both write it


def gguf_source(folder: Path) -> Path | None:
    """The GGUF file `folder` was converted from, or None for a folder that did not come from one."""
    record = folder / GGUF_SOURCE_FILE
    return Path(json.loads(record.read_text())["path"]) if record.is_file() else None


def _is_complete(folder: Path) -> bool:
    weights = ("model.safetensors", "model.safetensors.index.json")  # large models save in shards
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in weights)


def _check_gguf_magic(gguf: Path) -> None:
    """Fail in microseconds, with a clear message, on a file that is not GGUF at all."""
    try:
        with gguf.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {gguf}: {exc.strerror}; check its permissions") from exc
    if magic != b"GGUF":
        raise ModelLoadError(f"{gguf} is not a GGUF file (bad header); re-download it")


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """A cross-process lock, so two workers starting together convert the file only once."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _dequantise_to_folder(gguf: Path, out: Path) -> None:
    """Load with transformers' GGUF reader, then save a plain float32 copy it can load natively."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model, so copy its weights into a
    # fresh model built from the same config without the quantization marker.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
