"""The only place that owns tensors and device memory: the model, the KV cache, a step's inputs.

`LlamaRunner` runs the engine's own llama-family code over the paged KV cache: it preallocates the
cache once (sized by `kv_cache_bytes`), turns a `SchedulerPlan` into a flat batch (decode tokens
first, then prompt chunks; engine/step_inputs.py), runs the forward and returns logits for the sampled
positions only. How decode-only steps run (CUDA graphs, the native layer loop or the plain forward) is
decided once when the runner is built (engine/decode_paths.py). `HFRunner` is the fallback for other
architectures (GPT-2, GPT-NeoX, Falcon): still one batched forward per step, but over each sampled
sequence's whole text with left padding and no KV cache, so it is simple and obviously correct, not
fast. Both have one call, `run(plan) -> StepLogits`: the sampled rows' logits, and every position's
logits for the chunks that ask for prompt logprobs (`ScheduledChunk.wants_prompt_logits`).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tokenyard.engine import native
from tokenyard.engine.decode_paths import DecodeGraphMode, DecodePath, KernelPath, choose_decode_path
from tokenyard.engine.modeling.attention import PagedAttention
from tokenyard.engine.modeling.gguf_weights import load_gguf_linears
from tokenyard.engine.modeling.llama import LlamaModel, LlamaSpec, rope_table
from tokenyard.engine.modeling.quantize import quantize_linears
from tokenyard.engine.modeling.threads import ThreadBudget, thread_linears
from tokenyard.engine.modeling.weights import load_llama_weights, read_state_dict
from tokenyard.engine.scheduler import ScheduledChunk, SchedulerPlan
from tokenyard.engine.step_inputs import StepLayout

BLOCK_SIZE = 16


@dataclass
class PromptLogits:
    """Logits [S, V] (float32) of positions first .. first + S - 1 of `chunk`'s sequence."""

    chunk: ScheduledChunk
    first: int
    logits: torch.Tensor


@dataclass
class StepLogits:
    """What a runner returns for a step."""

    logits: torch.Tensor  # [N, V] float32: the plan's sampled chunks, in plan order
    prompt_logits: list[PromptLogits] = field(default_factory=list)  # for the chunks that asked, if computed


class ModelRunner(Protocol):
    """What the engine needs from a runner."""

    vocab_size: int
    num_blocks: int
    block_size: int
    device: torch.device

    @property
    def kernel_path(self) -> KernelPath:
        """How decode steps run, for operators: native, torch, cuda-graphs, transformers."""
        ...

    def run(self, plan: SchedulerPlan) -> StepLogits:
        """Logits for the plan's sampled chunks, and prompt logits for the chunks that want them."""
        ...


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * num_kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed tensor; on the CPU an anonymous mapping whose pages the kernel commits on first write.

    So the KV budget is a ceiling, not a reservation: the process holds the blocks requests have
    used (docs/engine.md, "Memory"), where `torch.zeros` would write, and so hold, every page at start."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    buffer = mmap.mmap(-1, max(size, 1))  # anonymous: reads as zeros, no memory until written
    return torch.frombuffer(buffer, dtype=torch.uint8)[:size].view(dtype).view(shape)


def num_blocks_for(kv_cache_bytes: int, bytes_per_token: int, block_size: int = BLOCK_SIZE) -> int:
    return max(1, kv_cache_bytes // (bytes_per_token * block_size))


class LlamaRunner:
    """The engine's own llama code over a preallocated paged KV cache."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        device: torch.device,
        dtype: torch.dtype,
        num_blocks: int,
        decode_graphs: DecodeGraphMode = "off",
        max_batch: int = 16,
    ) -> None:
        """`decode_graphs`: "capture" replays CUDA graphs for decode-only steps (see modeling.decode_graphs);
        "eager" runs their padded path without capture (how CPU tests check it); "off" never pads."""
        spec = model.spec
        self.model, self.device, self.dtype = model, device, dtype
        self.vocab_size, self.num_blocks, self.block_size = spec.vocab_size, num_blocks, BLOCK_SIZE
        # head-major; one slot more than the blocks hold: the scratch slot that padded graph rows write to
        shape = (spec.num_layers, spec.num_kv_heads, num_blocks * BLOCK_SIZE + 1, spec.head_dim)
        self.attention = PagedAttention(
            lazy_zeros(shape, dtype, device), lazy_zeros(shape, dtype, device), scale=spec.head_dim**-0.5
        )
        self.threads: ThreadBudget | None = None
        if device.type == "cpu":
            self.threads = ThreadBudget(torch.get_num_threads())
            thread_linears(model, self.threads)
            if (lib := native.kernels()) is not None:  # the native kernels split rows over these threads
                lib.native_set_threads(self.threads.max_threads)
        self.layout = StepLayout(self.attention, BLOCK_SIZE)
        self.decode_path: DecodePath = choose_decode_path(
            model,
            self.attention,
            self.layout,
            decode_graphs=decode_graphs,
            max_batch=max_batch,
            scratch_slot=num_blocks * BLOCK_SIZE,
        )

    @property
    def kernel_path(self) -> KernelPath:
        return self.decode_path.kernel_path

    @classmethod
    def load(
        cls,
        folder: Path,
        config: Any,
        *,
        device: torch.device,
        dtype: torch.dtype,
        quantization: str,
        kv_cache_bytes: Callable[[int], int],
        max_positions: int,
        decode_graphs: DecodeGraphMode = "off",
        max_batch: int = 16,
    ) -> LlamaRunner:
        spec = LlamaSpec.from_config(config)
        tensors = read_state_dict(folder)  # first: a folder without weights fails before gigabytes are allocated
        with torch.device("meta"):
            model = LlamaModel(spec, max_positions)
        model = materialised(model, device, dtype)
        model.rope.copy_(rope_table(spec, max_positions))  # the meta build left it empty
        load_llama_weights(model, tensors)
        del tensors
        if spec.tie_word_embeddings:  # one tensor for both, as the checkpoint has (49152 x 576 for SmolLM2)
            model.lm_head.weight = model.embed_tokens.weight
        if quantization == "gguf":
            load_gguf_linears(model, folder)  # the file's own blocks: K-quants, Q8_0, Q4_1...
        elif quantization != "none":
            quantize_linears(model, quantization)
        per_token = kv_bytes_per_token(spec.num_layers, spec.num_kv_heads, spec.head_dim, dtype)
        num_blocks = num_blocks_for(kv_cache_bytes(per_token), per_token)
        return cls(
            model.eval(),
            device=device,
            dtype=dtype,
            num_blocks=num_blocks,
            decode_graphs=decode_graphs,
            max_batch=max_batch,
        )

    def run(self, plan: SchedulerPlan) -> StepLogits:
        if self.threads is not None:
            self.threads.start_step(plan.num_tokens)
        # A step that asks for prompt logits needs every row's hidden state: the model's forward gives them.
        if not any(chunk.wants_prompt_logits for chunk in plan.chunks):
            logits = self.decode_path.logits(plan)
            if logits is not None:
                return StepLogits(logits)
        inputs = self.layout(plan)
        hidden = self.model(inputs.input_ids, inputs.positions, self.attention.bind(inputs.meta))  # [T, hidden]
        prompt_logits = [
            PromptLogits(chunk, chunk.start, self.model.compute_logits(hidden[row : row + chunk.num_tokens]))
            for chunk, row in zip(plan.chunks, inputs.first_rows, strict=True)
            if chunk.wants_prompt_logits
        ]
        return StepLogits(self.model.compute_logits(hidden[inputs.sample_rows]), prompt_logits)  # [N, V]


def materialised(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A model built on the meta device, its tensors now uninitialised storage on `device`, the floating
    ones in `dtype` (as `to_empty(device=device).to(dtype)`, without the float32 copy in between).

    Not `to_empty`: its `empty_like` of a meta tensor runs through torch._refs, which imports
    torch._dynamo and sympy, ~72 MiB that a worker would then hold for nothing (docs/engine.md,
    "Sizing memory"); `torch.empty` of a shape does not."""

    def empty(tensor: torch.Tensor) -> torch.Tensor:
        kind = dtype if tensor.is_floating_point() else tensor.dtype
        return torch.empty(tensor.shape, dtype=kind, device=device)

    return model._apply(empty)


class HFRunner:
    """Fallback for architectures without own code: a batched transformers forward, no KV cache."""

    def __init__(self, model: Any, *, num_blocks: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.num_blocks, self.block_size = num_blocks, BLOCK_SIZE
        self.kernel_path: KernelPath = "transformers"

    def run(self, plan: SchedulerPlan) -> StepLogits:
        """The whole text is computed when a sequence is sampled, so that is when a chunk that asked gets
        every position's logits; unfinished prompt chunks compute nothing here."""
        logits = self._forward(plan)  # [N, W, V], left-padded
        prompt_logits = [
            PromptLogits(chunk, 0, logits[row, -(chunk.start + chunk.num_tokens) :].float())
            for row, chunk in enumerate(plan.sampled)
            if chunk.wants_prompt_logits
        ]
        return StepLogits(logits[:, -1].float(), prompt_logits)  # [N, V]

    def _forward(self, plan: SchedulerPlan) -> torch.Tensor:
        """Logits [N, W, V] of the sampled sequences' whole texts, left-padded to the longest."""
        texts = [chunk.seq.all_token_ids[: chunk.start + chunk.num_tokens] for chunk in plan.sampled]
        if not texts:  # only unfinished prompt chunks: nothing to compute without a cache
            return torch.empty(0, 1, self.vocab_size, device=self.device)
        width = max(len(text) for text in texts)
        ids = torch.tensor([[0] * (width - len(t)) + t for t in texts], device=self.device)  # [N, W], left-padded
        mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in texts], device=self.device)  # [N, W]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # [N, W]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.logits  # [N, W, V]
