"""Build the engine a worker runs from a resolved model and the worker's config: the one place that does.

`load_engine` makes the `auto` settings concrete once (`resolve_settings`, `engine.defaults`), turns
`--device` and `--dtype` into a torch device and dtype, sets the process-wide torch thread count, and
hands the model to its backend's builder for the model's kind (`BACKENDS`). There is one backend
today, `builtin`: chat models run on the continuous-batching engine (`build_engine`: llama-family
models on the engine's own model code, other architectures through its batched transformers
fallback, the KV cache sized by `engine.kv_budget`), embedding models on the batched embedding
engine. Another backend is one more entry in `BACKENDS`. Any failure leaves as a `ModelLoadError`
with a one-line message.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine import native
from tokenyard.engine.base import EmbeddingEngine, GenerationEngine
from tokenyard.engine.defaults import auto_max_batch_size, auto_quantization, gguf_file_type, usable_cpus
from tokenyard.engine.embedding import SimpleEmbeddingEngine, default_matmul_dtype
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.kv_budget import kv_cache_budget
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_config import generation_eos_ids, read_model_config
from tokenyard.engine.model_runner import BLOCK_SIZE, HFRunner, LlamaRunner, ModelRunner, kv_bytes_per_token
from tokenyard.engine.modeling.llama import LlamaSpec
from tokenyard.engine.scheduler import Scheduler
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.errors import ModelLoadError
from tokenyard.models import ResolvedModel, check_context_setting, gguf_source, model_context_length
from tokenyard.protocol.internal import ModelKind

logger = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_EMBEDDING_BATCH = 32  # sentence-transformers' own default batch
MIN_BATCHED_TOKENS = 512  # the per-step token budget: prompt chunks up to this size share a step with decodes
Backend = Literal["builtin"]


class EngineBuilder(Protocol):
    """Builds a (not yet started) engine for the model in `folder`, with `config`'s settings concrete."""

    def __call__(
        self, folder: Path, config: WorkerConfig, *, device: torch.device, dtype: torch.dtype
    ) -> GenerationEngine | EmbeddingEngine: ...


def load_engine(
    resolved: ResolvedModel, config: WorkerConfig, *, backend: Backend = "builtin"
) -> GenerationEngine | EmbeddingEngine:
    """Load the model at `resolved.path` into `backend`'s engine for its kind (not started yet)."""
    configure_torch_threads()
    config = resolve_settings(resolved, config)
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device, resolved.kind)
    build = BACKENDS[backend][resolved.kind]
    try:
        engine = build(resolved.path, config, device=device, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many types for unreadable or unsupported folders
        first = str(exc).strip().splitlines()[0].rstrip(": ") if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load the model in {resolved.path}: {first}; check that the folder holds a complete "
            "Hugging Face model (config, weights, tokenizer) or re-download it"
        ) from exc
    release_freed_memory()
    return engine


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
    return _chat_settings(resolved.path, config, device)


def _chat_settings(folder: Path, config: WorkerConfig, device: torch.device) -> WorkerConfig:
    """A chat model's quantization and batch size; settings already concrete are kept as they are."""
    quantization: str = config.quantization
    if quantization == "auto":
        source = gguf_source(folder)
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
    torch_dtype = pick_dtype(settings.dtype, device, resolved.kind)
    dtype = str(torch_dtype).removeprefix("torch.")
    precision = settings.quantization if settings.quantization != "none" else dtype
    bert = resolved.kind is ModelKind.EMBED and _model_type(resolved.path) == "bert"  # the packed encoder's models
    if bert and embedding_matmul_dtype(settings, torch_dtype, device) != torch_dtype:
        precision = f"{dtype} with bfloat16 matmuls"
    return f"{precision} on {device.type}, max batch {settings.max_batch_size}"


def _model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def embedding_matmul_dtype(config: WorkerConfig, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """What an encoder multiplies in: an explicit `--dtype` is honoured as asked; with `auto` a
    float32 model multiplies in bfloat16 where the CPU does so natively (`default_matmul_dtype`)."""
    return default_matmul_dtype(dtype, device) if config.dtype == "auto" else dtype


# --- the builtin backend ---------------------------------------------------------------------------


def build_engine(
    folder: Path, config: WorkerConfig, *, device: torch.device, dtype: torch.dtype
) -> BatchingGenerationEngine:
    """Load the chat model in `folder` and build a (not yet started) continuous-batching engine for it."""
    config = _chat_settings(folder, config, device)  # concrete already from load_engine; other callers may pass auto
    batch = config.max_batch_size
    assert batch is not None  # _chat_settings sets it
    if config.quantization != "none" and device.type != "cpu":
        raise ModelLoadError(f"--quantization {config.quantization} uses CPU kernels; use --device cpu or none")
    hf_config = read_model_config(folder)
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
    eos = tokenizer.eos_token_ids() | _config_eos_ids(hf_config) | generation_eos_ids(folder)
    logger.info("engine: %s, %d KV blocks of %d tokens", type(runner).__name__, runner.num_blocks, BLOCK_SIZE)
    return BatchingGenerationEngine(runner, scheduler, tokenizer, context_length=context_length, eos_token_ids=eos)


def build_embedding_engine(
    folder: Path, config: WorkerConfig, *, device: torch.device, dtype: torch.dtype
) -> SimpleEmbeddingEngine:
    """Load the encoder in `folder` into the batched embedding engine."""
    return SimpleEmbeddingEngine.load(
        folder,
        device=device,
        dtype=dtype,
        context_length=config.context_length,
        max_batch_size=config.max_batch_size or _EMBEDDING_BATCH,
        batch_wait_timeout=config.batch_wait_timeout,
        cache_size=config.embedding_cache_size,
        matmul_dtype=embedding_matmul_dtype(config, dtype, device),
    )


# Each backend's builder per kind of model; `load_engine(..., backend=NAME)` picks one.
BACKENDS: dict[Backend, dict[ModelKind, EngineBuilder]] = {
    "builtin": {ModelKind.GENERATE: build_engine, ModelKind.EMBED: build_embedding_engine},
}


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
    kv_budget = kv_cache_budget(config, device, max_batch=max_batch, context_length=context_length)
    if not LlamaSpec.supports(hf_config):
        return _hf_runner(folder, hf_config, config, device=device, dtype=dtype, kv_bytes=kv_budget)
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


def _hf_runner(
    folder: Path,
    hf_config: Any,
    config: WorkerConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    kv_bytes: Callable[[int], int],
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
    return HFRunner(model, num_blocks=max(1, kv_bytes(per_token) // (per_token * BLOCK_SIZE)))


def _context_length(hf_config: Any, requested: int | None) -> int:
    limit = model_context_length(hf_config)
    window = getattr(hf_config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < limit and getattr(hf_config, "use_sliding_window", True):
        limit = window  # this engine attends to the whole context, which equals the window up to it
    check_context_setting(requested, limit)
    return requested or limit


def _first_int(config: Any, names: tuple[str, ...], *, default: int) -> int:
    values = [getattr(config, name, None) for name in names]
    return next((value for value in values if isinstance(value, int)), default)


def _config_eos_ids(hf_config: Any) -> set[int]:
    value = getattr(hf_config, "eos_token_id", None)
    return {value} if isinstance(value, int) else set(value or [])


# --- process and device choices ---------------------------------------------------------------------


def release_freed_memory() -> None:
    """Hand the heap that loading freed back to the system (glibc keeps it otherwise).

    Loading reads the float32 weights and converts and quantises them; glibc keeps most of what that
    freed in its arenas, so a worker held far more memory than it used (docs/engine.md, "Memory", and
    "Measurements behind the code"). Elsewhere (not glibc) this does nothing."""
    gc.collect()
    trim_heap()


def trim_heap() -> bool:
    """malloc_trim(0): free pages of every arena back to the kernel; False where libc lacks it."""
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    return False


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

    On a CPU with AVX512-BF16, SmolLM2-135M decodes faster in bfloat16 than in float32 and still answers
    correctly (docs/engine.md, "Measurements behind the code"); without native bf16 instructions
    bfloat16 is emulated and slower. Embedding models stay float32 on CPU: they are small, and float32
    keeps vectors equal to the reference ones.
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
