"""engine.defaults and the loader's resolve_settings: what `auto` and unset settings become."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine import native
from tokenyard.engine.defaults import auto_max_batch_size, auto_quantization, gguf_file_type
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import describe_engine, load_engine, resolve_settings
from tokenyard.engine.model_runner import lazy_zeros
from tokenyard.engine.modeling.quant import QuantisedLinear
from tokenyard.models import ResolvedModel, gguf_source
from tokenyard.protocol.internal import ModelKind


def _gguf_header(*pairs: tuple[str, int, bytes]) -> bytes:
    """A GGUF v3 header with no tensors and the given (key, value type, packed value) pairs."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    for key, kind, value in pairs:
        out += struct.pack("<Q", len(key.encode())) + key.encode() + struct.pack("<I", kind) + value
    return out


def _string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def test_gguf_file_type_is_read_past_strings_and_arrays(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    array = struct.pack("<IQ", 8, 2) + _string("a") + _string("模型")  # an array of two strings
    path.write_bytes(
        _gguf_header(
            ("general.architecture", 8, _string("llama")),
            ("general.tags", 9, array),
            ("llama.block_count", 4, struct.pack("<I", 30)),
            ("general.file_type", 4, struct.pack("<I", 3)),
        )
    )
    assert gguf_file_type(path) == "Q4_1"
    path.write_bytes(_gguf_header(("general.file_type", 4, struct.pack("<I", 15))))
    assert gguf_file_type(path) == "Q4_K_M"
    path.write_bytes(_gguf_header(("general.file_type", 4, struct.pack("<I", 11))))
    assert gguf_file_type(path) == "type 11"  # Q3_K_S: no kernel here
    path.write_bytes(_gguf_header(("general.name", 8, _string("x"))))
    assert gguf_file_type(path) is None
    path.write_bytes(b"GGUF\x03\x00")  # truncated
    assert gguf_file_type(path) is None
    assert gguf_file_type(tmp_path / "missing.gguf") is None


def test_the_default_model_file_is_q4_1(default_chat_model: ResolvedModel) -> None:
    source = gguf_source(default_chat_model.path)
    assert source is not None
    assert gguf_file_type(source) == "Q4_1"


def test_auto_quantization_keeps_the_file_precision_only_where_kernels_hold_it_exactly() -> None:
    assert auto_quantization("Q4_1", device_type="cpu", native_kernels=True) == "int4"
    assert auto_quantization("Q8_0", device_type="cpu", native_kernels=True) == "int8"
    assert auto_quantization("Q4_1", device_type="cpu", native_kernels=False) == "none"
    assert auto_quantization("Q4_1", device_type="cuda", native_kernels=True) == "none"
    assert auto_quantization("Q4_K_M", device_type="cpu", native_kernels=True) == "gguf"
    assert auto_quantization("Q6_K", device_type="cpu", native_kernels=True) == "gguf"
    assert auto_quantization("type 11", device_type="cpu", native_kernels=True) == "none"
    assert auto_quantization("F16", device_type="cpu", native_kernels=True) == "none"
    assert auto_quantization(None, device_type="cpu", native_kernels=True) == "none"


def test_auto_max_batch_size_follows_the_cores() -> None:
    assert auto_max_batch_size("cpu", cpus=1) == 32
    assert auto_max_batch_size("cpu", cpus=2) == 64
    assert auto_max_batch_size("cpu", cpus=64) == 256
    assert auto_max_batch_size("cuda", cpus=2) == 256


def test_resolve_settings_for_the_default_model(default_chat_model: ResolvedModel) -> None:
    settings = resolve_settings(default_chat_model, WorkerConfig(device="cpu"))
    assert settings.max_batch_size == auto_max_batch_size("cpu")
    expected = "int4" if native.kernels() is not None else "none"
    assert settings.quantization == expected
    assert describe_engine(default_chat_model, WorkerConfig(device="cpu")).startswith(
        "int4 on cpu" if expected == "int4" else "bfloat16 on cpu" if native.has_bf16_dot() else "float32 on cpu"
    )
    explicit = resolve_settings(default_chat_model, WorkerConfig(device="cpu", quantization="none", max_batch_size=5))
    assert (explicit.quantization, explicit.max_batch_size) == ("none", 5)


def test_a_folder_without_gguf_runs_in_its_dtype(tiny_chat_model_dir: Path) -> None:
    model = ResolvedModel("chat", tiny_chat_model_dir, ModelKind.GENERATE)
    assert resolve_settings(model, WorkerConfig(device="cpu")).quantization == "none"


@pytest.mark.parametrize("value", ["auto", "none", "int8", "int4"])
def test_quantization_config_accepts_auto_and_the_modes(value: str) -> None:
    assert WorkerConfig(quantization=value).quantization == value  # type: ignore[arg-type]


def _rss_mib() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def test_the_kv_cache_takes_memory_only_where_written() -> None:
    before = _rss_mib()
    cache = lazy_zeros((4, 2, 1 << 20, 64), torch.bfloat16, torch.device("cpu"))  # 1 GiB budget
    assert cache.shape == (4, 2, 1 << 20, 64) and float(cache[3, 1, -5:].float().abs().sum()) == 0.0
    assert _rss_mib() - before < 64
    cache[:, :, :1024] = 1.0  # 1 MiB written
    assert _rss_mib() - before < 64 and float(cache[0, 0, 1023, 0]) == 1.0


def test_the_default_engine_holds_its_weights_once(default_chat_model: ResolvedModel) -> None:
    if native.kernels() is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    engine = load_engine(default_chat_model, WorkerConfig(device="cpu", kv_cache_memory=0.5))
    assert isinstance(engine, BatchingGenerationEngine)
    layers = [m for m in engine._runner.model.modules() if isinstance(m, QuantisedLinear)]
    assert len(layers) == 4 * 30 + 1  # every linear layer and the output projection
    assert all(layer.dense is None for layer in layers)
