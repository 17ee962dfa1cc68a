"""How many bytes the KV cache may take: decided once, while the engine is built (`engine.loader`).

With `--kv-cache-memory GIB` it is exactly that. On CUDA it is `--gpu-memory-utilization` of the
device memory left free after the weights are loaded. On a CPU that fraction of free RAM would take
gigabytes from everyone else on the machine for no gain, so it is capped at `CPU_KV_CACHE_CAP` (and a
quarter of the available RAM). Without `--kv-cache-memory` it is also never more than twice what
`max_batch_size` sequences of full context length use (the rest would never be touched; twice, so the
prefix cache has room). Either way it must hold at least one sequence of the full context length,
which the loader checks once the runner has turned the budget into blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from tokenyard.config import WorkerConfig

GIB = 1 << 30
CPU_KV_CACHE_CAP = 2 * GIB


def kv_cache_budget(
    config: WorkerConfig, device: torch.device, *, max_batch: int, context_length: int
) -> Callable[[int], int]:
    """The KV budget in bytes as a function of the model's bytes per token.

    The runner calls it once the weights are on the device: only then is CUDA's free memory known.
    """
    fixed = _fixed_bytes(config, device)

    def budget(bytes_per_token: int) -> int:
        if config.kv_cache_memory is not None:
            return fixed
        available = fixed if fixed >= 0 else cuda_kv_bytes(device, config.gpu_memory_utilization)
        # More than every running sequence at full length (twice, for the prefix cache) is never used.
        return min(available, 2 * max_batch * context_length * bytes_per_token)

    return budget


def cuda_kv_bytes(device: torch.device, utilization: float) -> int:
    """The share of the device's memory the KV cache may take, after the weights are loaded."""
    free, total = torch.cuda.mem_get_info(device)
    return max(0, int(free - total * (1 - utilization)))


def _fixed_bytes(config: WorkerConfig, device: torch.device) -> int:
    """The budget known before loading: the flag's, or the CPU's cap; -1 on CUDA (see cuda_kv_bytes)."""
    if config.kv_cache_memory is not None:
        return int(config.kv_cache_memory * GIB)
    if device.type == "cuda":
        return -1
    return min(CPU_KV_CACHE_CAP, _available_ram() // 4)


def _available_ram(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * CPU_KV_CACHE_CAP  # unknown: the cap applies
