"""The KV budget: the flag exactly, a CPU cap, and never more than the batch can use."""

from __future__ import annotations

import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine.kv_budget import CPU_KV_CACHE_CAP, GIB, kv_cache_budget

CPU = torch.device("cpu")


def test_the_flag_is_the_budget_exactly() -> None:
    budget = kv_cache_budget(WorkerConfig(kv_cache_memory=0.5), CPU, max_batch=1, context_length=16)
    assert budget(1000) == GIB // 2  # even above what one short sequence would use


def test_on_cpu_the_budget_is_capped() -> None:
    budget = kv_cache_budget(WorkerConfig(), CPU, max_batch=1 << 20, context_length=1 << 20)
    assert 0 < budget(1) <= CPU_KV_CACHE_CAP


def test_without_the_flag_it_holds_twice_the_batch_at_full_length() -> None:
    budget = kv_cache_budget(WorkerConfig(), CPU, max_batch=4, context_length=128)
    assert budget(10) == 2 * 4 * 128 * 10  # bytes: far below the CPU cap
