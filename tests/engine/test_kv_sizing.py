"""The KV cache a chat worker allocates, end to end (engine/kv_budget.py; docs/engine.md, "Sizing memory").

Without `--kv-cache-memory`, a CPU worker takes a quarter of the available memory, at most 2 GiB, and
never more than twice what `max_batch_size` sequences of full context use; with the flag, exactly
that. The tiny chat model in float32 keeps 512 bytes a token (2 layers x 2 KV heads x 16 dims x K and
V x 4 bytes), 8 KiB a block of 16, with a context of 2,048 tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine import kv_budget
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import build_engine
from tokenyard.errors import ModelLoadError

MIB = 1 << 20
BLOCK_BYTES = 512 * 16  # one 16-token block of the tiny model's KV in float32
CONTEXT = 2048


def kv_blocks(folder: Path, **settings: object) -> int:
    config = WorkerConfig(device="cpu", quantization="none", **settings)  # type: ignore[arg-type]
    engine = build_engine(folder, config, device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(engine, BatchingGenerationEngine)
    return int(engine._runner.num_blocks)


def with_available(monkeypatch: pytest.MonkeyPatch, available: int) -> None:
    monkeypatch.setattr(kv_budget, "_available_ram", lambda: available)


def test_the_default_budget_is_a_quarter_of_what_is_available(
    tiny_chat_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_available(monkeypatch, 64 * MIB)  # 16 MiB of KV, less than 64 full contexts would use (128 MiB)
    assert kv_blocks(tiny_chat_model_dir, max_batch_size=64) == 16 * MIB // BLOCK_BYTES


def test_the_default_budget_never_exceeds_what_the_batch_can_use(
    tiny_chat_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_available(monkeypatch, 2 << 30)  # an edge box with 2 GiB free: 512 MiB by the first rule
    # 4 sequences of 2,048 tokens use 4 MiB; twice that (room for the prefix cache) is the budget
    assert kv_blocks(tiny_chat_model_dir, max_batch_size=4) == 2 * 4 * CONTEXT * 512 // BLOCK_BYTES
    assert kv_blocks(tiny_chat_model_dir, max_batch_size=4, context_length=512) == 2 * 4 * 512 * 512 // BLOCK_BYTES


def test_the_default_budget_is_capped(tiny_chat_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_available(monkeypatch, 64 << 30)  # a quarter would be 16 GiB
    monkeypatch.setattr(kv_budget, "CPU_KV_CACHE_CAP", 8 * MIB)  # 2 GiB in the code; smaller to keep the test light
    assert kv_blocks(tiny_chat_model_dir, max_batch_size=64) == 8 * MIB // BLOCK_BYTES


def test_kv_cache_memory_is_taken_exactly(tiny_chat_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_available(monkeypatch, 64 * MIB)
    # 12 MiB is more than the batch cap (2 x 1 x 2,048 tokens = 2 MiB) and less than a quarter of the RAM
    assert kv_blocks(tiny_chat_model_dir, max_batch_size=1, kv_cache_memory=12 / 1024) == 12 * MIB // BLOCK_BYTES


def test_a_budget_below_one_full_context_names_both_flags(tiny_chat_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="raise --kv-cache-memory or lower --context-length"):
        kv_blocks(tiny_chat_model_dir, kv_cache_memory=0.5 / 1024)  # 512 KiB: 1,024 tokens of 2,048
    assert kv_blocks(tiny_chat_model_dir, kv_cache_memory=0.5 / 1024, context_length=1024) == 64


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    2097152 kB\n")
    assert kv_budget._available_ram(meminfo) == 2 << 30
    assert kv_budget._available_ram(tmp_path / "missing") == 4 * kv_budget.CPU_KV_CACHE_CAP  # unknown: the cap applies
