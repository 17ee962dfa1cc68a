"""The only place that owns tensors and device memory: the model, the KV cache, a step's inputs.

`LlamaRunner` runs the engine's own llama-family code over the paged KV cache: it preallocates the
cache once (sized by `kv_cache_bytes`), turns a `SchedulerPlan` into a flat batch (decode tokens
first, then prompt chunks), runs the forward and returns logits for the sampled positions only.
`HFRunner` is the fallback for other architectures (GPT-2, GPT-NeoX, Falcon): still one batched
forward per step, but over each sampled sequence's whole text with left padding and no KV cache,
so it is simple and obviously correct, not fast. Both have the same small interface.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from tokenyard.engine import native
from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention, PrefillChunk
from tokenyard.engine.modeling.decode_graphs import DecodeGraphs
from tokenyard.engine.modeling.gguf_weights import load_gguf_linears
from tokenyard.engine.modeling.llama import LlamaModel, LlamaSpec, rope_table
from tokenyard.engine.modeling.native_decode import NativeDecoder
from tokenyard.engine.modeling.quantize import quantize_linears
from tokenyard.engine.modeling.threads import ThreadBudget, thread_linears
from tokenyard.engine.modeling.weights import load_llama_weights, read_state_dict
from tokenyard.engine.scheduler import ScheduledChunk, SchedulerPlan

BLOCK_SIZE = 16


class ModelRunner(Protocol):
    """What the engine needs from a runner."""

    vocab_size: int
    num_blocks: int
    block_size: int
    device: torch.device
    kernel_path: str  # how decode steps run, for operators: native, torch, cuda-graphs, transformers

    def run(self, plan: SchedulerPlan) -> torch.Tensor:
        """Logits [N, V] (float32) for the plan's sampled chunks, in plan order."""
        ...

    def run_with_prompt_logits(
        self, plan: SchedulerPlan, wanted: list[ScheduledChunk]
    ) -> tuple[torch.Tensor, list[tuple[ScheduledChunk, int, torch.Tensor]]]:
        """`run`, plus logits for every position of the `wanted` chunks (prompt logprobs):
        (chunk, first position, logits [S, V]) for those the step computed."""
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
        decode_graphs: Literal["off", "eager", "capture"] = "off",
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
        self.decoder: NativeDecoder | None = None  # decode-only steps in one native call (CPU)
        if device.type == "cpu":
            self.threads = ThreadBudget(torch.get_num_threads())
            thread_linears(model, self.threads)
            self.decoder = NativeDecoder.build(model, self.attention)
            if (lib := native.kernels()) is not None:  # the native kernels split rows over these threads
                lib.native_set_threads(self.threads.max_threads)
        self.graphs: DecodeGraphs | None = None
        if decode_graphs != "off":
            self.graphs = DecodeGraphs(
                model,
                self.attention,
                max_batch=max_batch,
                max_context=int(model.rope.shape[0]),
                scratch_slot=num_blocks * BLOCK_SIZE,
                capture=decode_graphs == "capture",
            )
        self.kernel_path = _kernel_path(self.graphs, self.decoder)

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
        decode_graphs: Literal["off", "eager", "capture"] = "off",
        max_batch: int = 16,
    ) -> LlamaRunner:
        spec = LlamaSpec.from_config(config)
        tensors = read_state_dict(folder)  # first: a folder without weights fails before gigabytes are allocated
        with torch.device("meta"):
            model = LlamaModel(spec, max_positions)
        model = model.to_empty(device=device).to(dtype)
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

    def run(self, plan: SchedulerPlan) -> torch.Tensor:
        if self.graphs is not None and (logits := self._run_graph(plan)) is not None:
            return logits
        input_ids, positions, sample_rows = self._prepare(plan)
        if self.decoder is not None and self.decoder.fits(self.attention.meta):
            hidden = self.decoder(input_ids, positions, self.attention.meta)  # [T, hidden]
            return self.decoder.logits(hidden[sample_rows])  # [N, V]
        hidden = self.model(input_ids, positions, self.attention)  # [T, hidden]
        return self.model.compute_logits(hidden[sample_rows])  # [N, V]

    def run_with_prompt_logits(
        self, plan: SchedulerPlan, wanted: list[ScheduledChunk]
    ) -> tuple[torch.Tensor, list[tuple[ScheduledChunk, int, torch.Tensor]]]:
        """`run`, plus the logits of every row of the `wanted` chunks; apart from `run` so that the
        common path pays nothing for the rare request that asks for prompt logprobs."""
        input_ids, positions, sample_rows = self._prepare(plan)
        hidden = self.model(input_ids, positions, self.attention)  # [T, hidden]
        extra = []
        for chunk in wanted:
            row = self._first_row[id(chunk)]
            extra.append((chunk, chunk.start, self.model.compute_logits(hidden[row : row + chunk.num_tokens])))
        return self.model.compute_logits(hidden[sample_rows]), extra  # [N, V], [(chunk, start, [S, V])]

    def _run_graph(self, plan: SchedulerPlan) -> torch.Tensor | None:
        """Logits of a decode-only step through its decode graph; None when the step does not fit one."""
        assert self.graphs is not None
        decodes = plan.chunks
        if any(chunk.num_tokens != 1 or not chunk.sample for chunk in decodes):
            return None
        slots, lengths = self._context_slots(decodes)
        bucket = self.graphs.bucket(len(decodes), int(lengths.max()))
        if bucket is None:
            return None
        if self.threads is not None:
            self.threads.start_step(plan.num_tokens)
        positions = [chunk.start for chunk in decodes]
        ids = [chunk.seq.token_at(chunk.start) for chunk in decodes]
        new_slots = [self._slot(chunk.seq.block_table, chunk.start) for chunk in decodes]
        return self.graphs.run(bucket, ids, positions, new_slots, slots)

    def _prepare(self, plan: SchedulerPlan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat inputs, decode tokens first; attention metadata goes to the backend."""
        if self.threads is not None:
            self.threads.start_step(plan.num_tokens)
        decodes = [chunk for chunk in plan.chunks if chunk.num_tokens == 1]
        prefills = [chunk for chunk in plan.chunks if chunk.num_tokens > 1]
        ids = [chunk.seq.token_at(chunk.start) for chunk in decodes]
        positions = [chunk.start for chunk in decodes]
        first_row: dict[int, int] = {id(chunk): row for row, chunk in enumerate(decodes)}
        chunks = []
        for chunk in prefills:
            first_row[id(chunk)] = len(ids)
            chunks.append(self._prefill_chunk(chunk, len(ids)))
            ids.extend(chunk.seq.all_token_ids[chunk.start : chunk.start + chunk.num_tokens])
            positions.extend(range(chunk.start, chunk.start + chunk.num_tokens))
        self._first_row = first_row  # each chunk's first row in the flat batch, for prompt logprobs
        slot_mapping = [self._slot(chunk.seq.block_table, pos) for chunk in decodes for pos in (chunk.start,)]
        slot_mapping += [int(s) for c in chunks for s in c.slots[-c.length :].tolist()]
        meta = AttentionMetadata(slot_mapping=self._tensor(slot_mapping), num_decode=len(decodes), prefills=chunks)
        if decodes:
            meta.decode_slots, meta.decode_mask, meta.decode_lengths = self._decode_slots(decodes)
        self.attention.meta = meta
        rows = [first_row[id(chunk)] + chunk.num_tokens - 1 for chunk in plan.chunks if chunk.sample]
        return self._tensor(ids), self._tensor(positions), self._tensor(rows)

    def _slot(self, block_table: list[int], position: int) -> int:
        return block_table[position // self.block_size] * self.block_size + position % self.block_size

    def _prefill_chunk(self, chunk: ScheduledChunk, start_row: int) -> PrefillChunk:
        end = chunk.start + chunk.num_tokens
        slots = self._slots_of(chunk.seq.block_table, end)  # [end]
        if chunk.start == 0:
            return PrefillChunk(start=start_row, length=chunk.num_tokens, slots=slots, mask=None)
        query = torch.arange(chunk.start, end)[:, None]  # [S, 1] absolute positions
        mask = torch.arange(end)[None, :] <= query  # [S, end]
        return PrefillChunk(start=start_row, length=chunk.num_tokens, slots=slots, mask=mask.to(self.device))

    def _slots_of(self, block_table: Seq[int], length: int) -> torch.Tensor:
        blocks = torch.tensor(block_table[: math.ceil(length / self.block_size)], dtype=torch.long)
        slots = (blocks[:, None] * self.block_size + torch.arange(self.block_size)).flatten()  # [nb * bs]
        return slots[:length].to(self.device)

    def _context_slots(self, decodes: Seq[ScheduledChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """(host) Each decoding sequence's cache slots [B, L], padded with slot 0 past its own length,
        and the lengths [B], the new token included."""
        lengths = torch.tensor([chunk.start + 1 for chunk in decodes])  # [B] context incl. the new token
        num_blocks = math.ceil(int(lengths.max()) / self.block_size)
        tables = [chunk.seq.block_table[:num_blocks] for chunk in decodes]
        padded = torch.tensor([table + [0] * (num_blocks - len(table)) for table in tables])  # [B, nb]
        return (padded[:, :, None] * self.block_size + torch.arange(self.block_size)).flatten(1), lengths

    def _decode_slots(
        self, decodes: list[ScheduledChunk]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(slots [B, L], mask [B, 1, L] or None, lengths [B] or None): the native kernel reads the
        lengths on the host; torch's attention reads a mask on the device instead."""
        slots, lengths = self._context_slots(decodes)  # [B, L], [B]
        if self.attention.native is not None:
            return slots, None, lengths
        width = int(lengths.max())
        if bool((lengths == width).all()):  # nothing to mask (always so at batch 1): the faster unmasked kernel
            return slots[:, :width].to(self.device), None, None
        mask = torch.arange(slots.shape[1])[None, :] < lengths[:, None]  # [B, L]
        return slots.to(self.device), mask[:, None, :].to(self.device), None  # [B, 1, L]

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(self.device)


def _kernel_path(graphs: DecodeGraphs | None, decoder: NativeDecoder | None) -> str:
    if graphs is not None:
        return "cuda-graphs" if graphs.capture else "torch"
    return "native" if decoder is not None else "torch"


class HFRunner:
    """Fallback for architectures without own code: a batched transformers forward, no KV cache."""

    def __init__(self, model: Any, *, num_blocks: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.num_blocks, self.block_size = num_blocks, BLOCK_SIZE
        self.kernel_path = "transformers"

    def run(self, plan: SchedulerPlan) -> torch.Tensor:
        return self._forward(plan)[:, -1].float()  # [N, V]

    def run_with_prompt_logits(
        self, plan: SchedulerPlan, wanted: list[ScheduledChunk]
    ) -> tuple[torch.Tensor, list[tuple[ScheduledChunk, int, torch.Tensor]]]:
        """`run`, plus every position's logits for the wanted chunks that are sampled (the whole
        text is computed then; unfinished prompt chunks compute nothing here)."""
        logits = self._forward(plan)  # [N, W, V], left-padded
        sampled = plan.sampled
        extra = []
        for chunk in wanted:
            row = next((i for i, c in enumerate(sampled) if c is chunk), None)
            if row is not None:
                extra.append((chunk, 0, logits[row, -(chunk.start + chunk.num_tokens) :].float()))
        return logits[:, -1].float(), extra

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
