"""Assemble a `BatchingGenerationEngine` for a model folder: runner, KV-cache size, scheduler, tokenizer.

The KV cache is sized once, here. With `--kv-cache-memory GIB` it is exactly that. On CUDA it is
`--gpu-memory-utilization` of the device memory left free after the weights are loaded. On a CPU
that fraction of free RAM would take gigabytes from everyone else on the machine for no gain, so it
is capped at `CPU_KV_CACHE_CAP` (and a quarter of the available RAM): 2 GiB holds ~90,000 tokens of
SmolLM2-135M in bfloat16. Without `--kv-cache-memory` it is also never more than twice what
`max_batch_size` sequences of full context length use (the rest would never be touched; twice, so the
prefix cache has room). Either way it must hold at least one sequence of the full context length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine.defaults import auto_max_batch_size
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE, HFRunner, LlamaRunner, ModelRunner, kv_bytes_per_token
from tokenyard.engine.modeling.llama import LlamaSpec
from tokenyard.engine.scheduler import Scheduler
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.errors import ModelLoadError
from tokenyard.models import model_context_length

logger = logging.getLogger(__name__)
GIB = 1 << 30
CPU_KV_CACHE_CAP = 2 * GIB
MIN_BATCHED_TOKENS = 512  # the per-step token budget: prompt chunks up to this size share a step with decodes


def build_engine(
    folder: Path, config: WorkerConfig, *, device: torch.device, dtype: torch.dtype
) -> BatchingGenerationEngine:
    """Load the model in `folder` and build a (not yet started) batching engine for it."""
    from transformers import AutoConfig

    # Settings still at auto here (a caller that skipped the loader's resolve_settings): no GGUF is known.
    batch = config.max_batch_size or auto_max_batch_size(device.type)
    quantization = "none" if config.quantization == "auto" else config.quantization
    config = config.model_copy(update={"quantization": quantization, "max_batch_size": batch})
    if config.quantization != "none" and device.type != "cpu":
        raise ModelLoadError(f"--quantization {config.quantization} uses CPU kernels; use --device cpu or none")
    hf_config = AutoConfig.from_pretrained(folder)
    context_length = _context_length(hf_config, config.context_length)
    runner = _load_runner(
        folder, hf_config, config, device=device, dtype=dtype, context_length=context_length, max_batch=batch
    )
    if runner.num_blocks * BLOCK_SIZE < context_length:
        raise ModelLoadError(
            f"the KV cache holds {runner.num_blocks * BLOCK_SIZE} tokens, fewer than "
            f"--context-length {context_length}; raise --kv-cache-memory or lower --context-length"
        )
    scheduler = Scheduler(
        BlockManager(runner.num_blocks, BLOCK_SIZE),
        max_batch_size=batch,
        max_num_batched_tokens=max(MIN_BATCHED_TOKENS, batch),
        max_queue_length=config.max_queue_length,
        batch_wait_timeout=config.batch_wait_timeout,
    )
    tokenizer = HFPromptTokenizer.from_folder(folder)
    eos = tokenizer.eos_token_ids() | _config_eos_ids(hf_config, folder)
    logger.info("engine: %s, %d KV blocks of %d tokens", type(runner).__name__, runner.num_blocks, BLOCK_SIZE)
    return BatchingGenerationEngine(runner, scheduler, tokenizer, context_length=context_length, eos_token_ids=eos)


def _load_runner(
    folder: Path,
    hf_config: Any,
    config: WorkerConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    context_length: int,
    max_batch: int,
) -> ModelRunner:
    """The engine's own llama code where it applies, else the transformers fallback."""
    kv_bytes = _kv_cache_bytes(config, device)

    def kv_budget(bytes_per_token: int) -> int:  # called once the weights are on the device
        if config.kv_cache_memory is not None:
            return kv_bytes
        budget = kv_bytes if kv_bytes >= 0 else cuda_kv_bytes(device, config.gpu_memory_utilization)
        # More than every running sequence at full length (twice, for the prefix cache) is never used.
        return min(budget, 2 * max_batch * context_length * bytes_per_token)

    if not LlamaSpec.supports(hf_config):
        return _hf_runner(folder, hf_config, config, device=device, dtype=dtype, kv_budget=kv_budget)
    return LlamaRunner.load(
        folder,
        hf_config,
        device=device,
        dtype=dtype,
        quantization=config.quantization,
        kv_cache_bytes=kv_budget,
        max_positions=context_length,
        decode_graphs="capture" if device.type == "cuda" and not config.enforce_eager else "off",
        max_batch=max_batch,
    )


def _context_length(hf_config: Any, requested: int | None) -> int:
    limit = model_context_length(hf_config)
    window = getattr(hf_config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < limit and getattr(hf_config, "use_sliding_window", True):
        limit = window  # this engine attends to the whole context, which equals the window up to it
    if requested is not None and requested > limit:
        raise ModelLoadError(f"--context-length {requested} exceeds the model's maximum of {limit} tokens")
    return requested or limit


def _kv_cache_bytes(config: WorkerConfig, device: torch.device) -> int:
    if config.kv_cache_memory is not None:
        return int(config.kv_cache_memory * GIB)
    if device.type == "cuda":
        return -1  # decided after the weights are loaded (see cuda_kv_bytes)
    return min(CPU_KV_CACHE_CAP, _available_ram() // 4)


def _available_ram(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * CPU_KV_CACHE_CAP  # unknown: the cap applies


def cuda_kv_bytes(device: torch.device, utilization: float) -> int:
    """The share of the device's memory the KV cache may take, after the weights are loaded."""
    free, total = torch.cuda.mem_get_info(device)
    return max(0, int(free - total * (1 - utilization)))


def _hf_runner(
    folder: Path,
    hf_config: Any,
    config: WorkerConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    kv_budget: Callable[[int], int],
) -> HFRunner:
    from transformers import AutoModelForCausalLM

    if config.quantization != "none":
        raise ModelLoadError(
            f"--quantization {config.quantization} needs a llama-family model; this one is {hf_config.model_type}"
        )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    # No cache is kept, but the block count still bounds how many tokens run at once (memory for activations).
    layers = _first_int(hf_config, ("num_hidden_layers", "n_layer"), default=1)
    hidden = _first_int(hf_config, ("hidden_size", "n_embd"), default=64)
    per_token = kv_bytes_per_token(layers, 1, hidden, dtype)
    return HFRunner(model, num_blocks=max(1, kv_budget(per_token) // (per_token * BLOCK_SIZE)))


def _first_int(config: Any, names: tuple[str, ...], *, default: int) -> int:
    values = [getattr(config, name, None) for name in names]
    return next((value for value in values if isinstance(value, int)), default)


def _config_eos_ids(hf_config: Any, folder: Path) -> set[int]:
    ids: set[int] = set()
    sources: list[Any] = [hf_config]
    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        sources.append(GenerationConfig.from_pretrained(folder))
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    return ids
