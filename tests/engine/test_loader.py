"""load_engine: engine by kind, device/dtype choices, and one-line ModelLoadErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine.embedding import SimpleEmbeddingEngine
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import (
    cpu_has_native_bfloat16,
    describe_engine,
    load_engine,
    pick_device,
    pick_dtype,
    resolve_settings,
)
from tokenyard.errors import ModelLoadError
from tokenyard.models import ResolvedModel
from tokenyard.protocol.internal import ModelKind

CPU = torch.device("cpu")


def test_engine_is_picked_by_kind(tiny_chat_model_dir: Path, tiny_embedding_model_dir: Path) -> None:
    config = WorkerConfig(device="cpu", dtype="float32", max_batch_size=3)
    chat = load_engine(ResolvedModel("chat", tiny_chat_model_dir, ModelKind.GENERATE), config)
    embed = load_engine(ResolvedModel("embed", tiny_embedding_model_dir, ModelKind.EMBED), config)
    assert isinstance(chat, BatchingGenerationEngine)
    assert chat.context_length == 2048
    assert isinstance(embed, SimpleEmbeddingEngine)


def test_context_length_flag_overrides_but_cannot_exceed_the_model(tiny_chat_model_dir: Path) -> None:
    model = ResolvedModel("chat", tiny_chat_model_dir, ModelKind.GENERATE)
    assert load_engine(model, WorkerConfig(device="cpu", context_length=128)).context_length == 128
    with pytest.raises(ModelLoadError, match="exceeds the model's maximum of 2048"):
        load_engine(model, WorkerConfig(device="cpu", context_length=4096))


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantization_loads_for_chat_and_is_ignored_for_embeddings(
    tiny_chat_model_dir: Path, tiny_embedding_model_dir: Path, quantization: str
) -> None:
    chat = ResolvedModel("chat", tiny_chat_model_dir, ModelKind.GENERATE)
    config = WorkerConfig(device="cpu", quantization=quantization, kv_cache_memory=0.01)  # type: ignore[arg-type]
    assert isinstance(load_engine(chat, config), BatchingGenerationEngine)
    # `tokenyard serve` hands one worker section to both workers: the embedding worker starts anyway.
    embed = ResolvedModel("embed", tiny_embedding_model_dir, ModelKind.EMBED)
    assert isinstance(load_engine(embed, config), SimpleEmbeddingEngine)
    assert resolve_settings(embed, config).quantization == "none"
    bert = json.loads((tiny_embedding_model_dir / "config.json").read_text())["model_type"] == "bert"
    precision = "float32 with bfloat16 matmuls" if bert and cpu_has_native_bfloat16() else "float32"
    assert describe_engine(embed, config) == f"{precision} on cpu, max batch 32"
    # An explicit dtype is what the encoder multiplies in, and what the line says.
    assert describe_engine(embed, config.model_copy(update={"dtype": "float32"})) == "float32 on cpu, max batch 32"


def test_unloadable_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    with pytest.raises(ModelLoadError) as raised:
        load_engine(ResolvedModel("x", tmp_path, ModelKind.GENERATE), WorkerConfig(device="cpu"))
    assert str(tmp_path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_explicit_dtypes_are_honoured() -> None:
    assert pick_dtype("float32", CPU, ModelKind.GENERATE) is torch.float32
    assert pick_dtype("bfloat16", CPU, ModelKind.EMBED) is torch.bfloat16
    assert pick_dtype("float16", CPU, ModelKind.GENERATE) is torch.float16


def test_auto_dtype_on_cpu_uses_bfloat16_only_with_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tokenyard.engine.loader.cpu_has_native_bfloat16", lambda: True)
    assert pick_dtype("auto", CPU, ModelKind.GENERATE) is torch.bfloat16
    assert pick_dtype("auto", CPU, ModelKind.EMBED) is torch.float32
    monkeypatch.setattr("tokenyard.engine.loader.cpu_has_native_bfloat16", lambda: False)
    assert pick_dtype("auto", CPU, ModelKind.GENERATE) is torch.float32


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx512f avx512bw\n")
    assert not cpu_has_native_bfloat16(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert cpu_has_native_bfloat16(cpuinfo)
    assert not cpu_has_native_bfloat16(tmp_path / "missing")


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == CPU
    assert pick_device("cpu") == CPU
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        pick_device("cuda")
