"""GGUF conversion: once per file into a folder named after it, never half-written, one-line errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.models.helpers import one_line_error
from tokenyard.errors import ModelLoadError
from tokenyard.models import convert_gguf, gguf_conversion, resolve_model


def test_corrupt_gguf_is_a_one_line_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF file") as raised:
        resolve_model(str(bad), tmp_path / "home")
    assert str(bad) in one_line_error(raised)
    assert not any((tmp_path / "home" / "models").glob("gguf-broken-*"))


def test_truncated_gguf_fails_conversion_cleanly(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)  # a valid magic, then garbage
    with pytest.raises(ModelLoadError, match="cannot convert") as raised:
        resolve_model(str(truncated), tmp_path / "home")
    assert str(truncated) in one_line_error(raised)
    leftovers = [p.name for p in (tmp_path / "home" / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def fake_dequantise(calls: list[Path]) -> object:
    def dequantise(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
        (out / "model.safetensors").write_bytes(b"weights")

    return dequantise


def test_local_gguf_is_converted_once_into_a_folder_named_after_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(gguf_conversion, "_dequantise_to_folder", fake_dequantise(calls))
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 32)
    first = resolve_model(str(gguf), tmp_path / "home")
    second = resolve_model(str(gguf), tmp_path / "home")
    assert first == second
    assert first.name == "my-model"
    assert first.path.parent == tmp_path / "home" / "models"
    assert first.path.name.startswith("gguf-my-model-")
    assert calls == [gguf]
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed file gets a fresh conversion
    assert resolve_model(str(gguf), tmp_path / "home").path != first.path
    assert len(calls) == 2


def test_interrupted_conversion_leaves_no_half_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def dies_halfway(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # as if killed between writing the config and the weights

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 32)
    target = tmp_path / "home" / "models" / "converted"
    monkeypatch.setattr(gguf_conversion, "_dequantise_to_folder", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf, target)
    assert not target.exists()
    monkeypatch.setattr(gguf_conversion, "_dequantise_to_folder", fake_dequantise([]))
    assert convert_gguf(gguf, target) == target  # the next start cleans up and converts
    assert (target / "model.safetensors").is_file()
