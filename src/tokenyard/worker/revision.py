"""The revision of the model a worker serves, recorded with every stored conversation.

`logs replay` is only identical on the same weights, so each record names them. A model from the
hub carries its commit in its snapshot path (`.../snapshots/<commit>/`), and that is its revision.
Any other folder (a GGUF conversion, a local fine-tune) gets a fingerprint: SHA-256 over its
config and tokenizer files and, for each weight file, its size and a sample of its bytes (64
blocks of 64 KiB spread evenly over it). A fine-tune of the same architecture has weight files of
the very same sizes, but its bytes differ nearly everywhere, so the sample tells them apart; reading
4 MiB a file instead of all of it keeps a 14 GB model's start-up from waiting on a full hash.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
SAMPLES = 64
SAMPLE_BYTES = 64 * 1024
HUB_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(/|$)")


def model_revision(folder: Path) -> str:
    """`hub:<commit>` for a hub snapshot, else `sha256:<first 16 hex digits of the fingerprint>`."""
    snapshot = HUB_SNAPSHOT.search(folder.resolve().as_posix() + "/")
    if snapshot:
        return f"hub:{snapshot.group(1)}"
    digest = hashlib.sha256()
    for name in SMALL_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.name.encode() + b"\0" + _sample(path))
    return f"sha256:{digest.hexdigest()[:16]}"


def _sample(path: Path) -> bytes:
    """The file's size and SAMPLES blocks of SAMPLE_BYTES at evenly spaced offsets (all of a small file)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size <= SAMPLES * SAMPLE_BYTES:
            return size.to_bytes(8, "little") + handle.read()
        parts = [size.to_bytes(8, "little")]
        step = (size - SAMPLE_BYTES) // (SAMPLES - 1)
        for n in range(SAMPLES):
            handle.seek(n * step)
            parts.append(handle.read(SAMPLE_BYTES))
        return b"".join(parts)
