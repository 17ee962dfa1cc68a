"""Build the engine a worker runs: pick device, dtype and engine class for a resolved model.

This is where the process-wide torch settings are made (thread count) and where the `--device`,
`--dtype` and `--quantization` flags turn into concrete choices. Generative models run on the
continuous-batching engine (`engine.factory`): llama-family models on the engine's own model code,
other architectures through its batched transformers fallback. Any failure leaves as a
`ModelLoadError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
from pathlib import Path

import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine import native
from tokenyard.engine.base import EmbeddingEngine, GenerationEngine
from tokenyard.engine.defaults import auto_max_batch_size, auto_quantization, gguf_file_type, usable_cpus
from tokenyard.engine.embedding import SimpleEmbeddingEngine
from tokenyard.engine.factory import build_engine
from tokenyard.errors import ModelLoadError
from tokenyard.models import ResolvedModel, gguf_source
from tokenyard.protocol.internal import ModelKind

logger = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_EMBEDDING_BATCH = 32  # sentence-transformers' own default batch


def resolve_settings(resolved: ResolvedModel, config: WorkerConfig) -> WorkerConfig:
    """`config` with `auto`/unset engine settings made concrete for this model and machine
    (engine.defaults); an embedding model drops the chat-only ones instead of refusing them."""
    device = pick_device(config.device)
    if resolved.kind is ModelKind.EMBED:
        if config.quantization not in ("auto", "none"):
            logger.info("embedding model: --quantization %s applies to chat models only; ignored", config.quantization)
        return config.model_copy(
            update={"quantization": "none", "max_batch_size": config.max_batch_size or _EMBEDDING_BATCH}
        )
    quantization: str = config.quantization
    if quantization == "auto":
        source = gguf_source(resolved.path)
        gguf_type = gguf_file_type(source) if source is not None else None
        quantization = auto_quantization(
            gguf_type, device_type=device.type, native_kernels=native.kernels() is not None
        )
    batch = config.max_batch_size or auto_max_batch_size(device.type)
    return config.model_copy(update={"quantization": quantization, "max_batch_size": batch})


def describe_engine(resolved: ResolvedModel, config: WorkerConfig) -> str:
    """One line on how the model runs ("int4 on cpu, max batch 64"), for start-up lines and status."""
    settings = resolve_settings(resolved, config)
    device = pick_device(settings.device)
    dtype = str(pick_dtype(settings.dtype, device, resolved.kind)).removeprefix("torch.")
    precision = settings.quantization if settings.quantization != "none" else dtype
    return f"{precision} on {device.type}, max batch {settings.max_batch_size}"


def load_engine(resolved: ResolvedModel, config: WorkerConfig) -> GenerationEngine | EmbeddingEngine:
    """Load the model at `resolved.path` into the engine for its kind (not started yet)."""
    configure_torch_threads()
    config = resolve_settings(resolved, config)
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device, resolved.kind)
    try:
        if resolved.kind is ModelKind.EMBED:
            return SimpleEmbeddingEngine.load(
                resolved.path,
                device=device,
                dtype=dtype,
                context_length=config.context_length,
                max_batch_size=config.max_batch_size or _EMBEDDING_BATCH,
                batch_wait_timeout=config.batch_wait_timeout,
                cache_size=config.embedding_cache_size,
            )
        engine = build_engine(resolved.path, config, device=device, dtype=dtype)
        release_freed_memory()
        return engine
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many types for unreadable or unsupported folders
        first = str(exc).strip().splitlines()[0].rstrip(": ") if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load the model in {resolved.path}: {first}; check that the folder holds a complete "
            "Hugging Face model (config, weights, tokenizer) or re-download it"
        ) from exc


def release_freed_memory() -> None:
    """Hand the heap that loading freed back to the system (glibc keeps it otherwise).

    Loading reads the float32 weights and converts and quantises them; glibc keeps most of what that
    freed in its arenas, and SmolLM2's int4 worker held ~370 MiB more than it used (docs/engine.md,
    "Memory"). Elsewhere (not glibc) this does nothing."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def configure_torch_threads() -> None:
    """Use the CPUs this process may run on; torch counts the host's cores, too many in a container."""
    available = usable_cpus()
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def pick_dtype(choice: str, device: torch.device, kind: ModelKind) -> torch.dtype:
    """`--dtype auto`: bfloat16 where the hardware does it natively, else float16 on GPUs, float32 on CPUs.

    On a CPU with AVX512-BF16, SmolLM2-135M decodes ~1.5x faster in bfloat16 than float32 and still
    answers correctly; without native bf16 instructions bfloat16 is emulated and slower. Embedding
    models stay float32 on CPU: they are small, and float32 keeps vectors equal to the reference ones.
    """
    if choice != "auto":
        return _DTYPES[choice]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind is ModelKind.GENERATE and cpu_has_native_bfloat16():
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises bfloat16 dot-product instructions (x86 AVX512-BF16 or AMX, Arm BF16)."""
    try:
        flags = set(cpuinfo.read_text(errors="replace").split())
    except OSError:  # not Linux: stay with float32, which is never wrong
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
