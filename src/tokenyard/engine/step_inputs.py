"""A step's flat batch: what the model runner feeds the model for one `SchedulerPlan`.

Decode tokens come first (one row per decoding sequence), then every prompt chunk's tokens, so each
linear layer is one matmul for the whole step and only attention needs to know which row belongs to
which sequence: `AttentionMetadata` says where each new K/V goes in the paged cache (slot = block *
block_size + offset) and which slots each row attends to. `StepLayout` builds a fresh `StepInputs`
for every step and returns it; nothing of a step stays behind on the layout or the attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention, PrefillChunk
from tokenyard.engine.scheduler import ScheduledChunk, SchedulerPlan


@dataclass
class StepInputs:
    """One step's rows: the model's inputs, where each chunk landed and the attention metadata."""

    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    sample_rows: torch.Tensor  # [N] the last row of each sampled chunk, in plan order
    first_rows: list[int]  # each chunk's first row, in plan order
    meta: AttentionMetadata


class StepLayout:
    """Lays a plan out as rows over the paged cache of `attention`, in the form its kernels read."""

    def __init__(self, attention: PagedAttention, block_size: int) -> None:
        self.attention, self.block_size = attention, block_size
        self.device = attention.k_cache.device
        self.on_host = self.device.type == "cpu"
        self.block_offsets = torch.arange(block_size)  # [bs]: a block's slots are block * bs + these

    def __call__(self, plan: SchedulerPlan) -> StepInputs:
        chunks = plan.chunks
        decodes = [i for i, chunk in enumerate(chunks) if chunk.num_tokens == 1]
        prompts = [i for i, chunk in enumerate(chunks) if chunk.num_tokens > 1]
        first_rows = [0] * len(chunks)
        ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []  # the cache slot each row's K/V goes to
        for i in decodes:
            chunk = chunks[i]
            first_rows[i] = len(ids)
            ids.append(chunk.seq.token_at(chunk.start))
            positions.append(chunk.start)
            slot_mapping.append(self.slot(chunk.seq.block_table, chunk.start))
        prefills = []
        for i in prompts:
            chunk, end = chunks[i], chunks[i].start + chunks[i].num_tokens
            first_rows[i] = len(ids)
            slots = self._slots_of(chunk.seq.block_table, end)  # [end], host
            prefills.append(self._prefill_chunk(chunk, len(ids), slots))
            ids.extend(chunk.seq.all_token_ids[chunk.start : end])
            positions.extend(range(chunk.start, end))
            slot_mapping.extend(slots[chunk.start :].tolist())
        meta = AttentionMetadata(slot_mapping=self._tensor(slot_mapping), num_decode=len(decodes), prefills=prefills)
        if decodes:
            context = self.context_slots([chunks[i] for i in decodes])
            meta.decode_slots, meta.decode_mask, meta.decode_lengths = self.attention.decode_inputs(*context)
        rows = [first_rows[i] + chunk.num_tokens - 1 for i, chunk in enumerate(chunks) if chunk.sample]
        return StepInputs(self._tensor(ids), self._tensor(positions), self._tensor(rows), first_rows, meta)

    def slot(self, block_table: list[int], position: int) -> int:
        return block_table[position // self.block_size] * self.block_size + position % self.block_size

    def context_slots(self, decodes: Seq[ScheduledChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """(host) Each decoding sequence's cache slots [B, L], padded with slot 0 past its own length,
        and the lengths [B], the new token included."""
        # Lists first, tensors once: a decode step runs these right after the last one's kernels have
        # flushed the caches, where each tensor op costs tens of µs (docs/engine.md, "Per-step overhead").
        lengths = [chunk.start + 1 for chunk in decodes]  # context incl. the new token
        num_blocks = math.ceil(max(lengths) / self.block_size)
        tables = [chunk.seq.block_table[:num_blocks] for chunk in decodes]
        padded = torch.tensor([table + [0] * (num_blocks - len(table)) for table in tables])  # [B, nb]
        slots = (padded.mul_(self.block_size).unsqueeze(2) + self.block_offsets).flatten(1)  # [B, nb * bs]
        return slots, torch.tensor(lengths)

    def _prefill_chunk(self, chunk: ScheduledChunk, start_row: int, slots: torch.Tensor) -> PrefillChunk:
        # slots: [end] (host), the whole context's
        on_device = slots.to(self.device)
        if chunk.start == 0:
            return PrefillChunk(start=start_row, length=chunk.num_tokens, slots=on_device, mask=None)
        end = chunk.start + chunk.num_tokens
        query = torch.arange(chunk.start, end)[:, None]  # [S, 1] absolute positions
        mask = torch.arange(end)[None, :] <= query  # [S, end]
        return PrefillChunk(start=start_row, length=chunk.num_tokens, slots=on_device, mask=mask.to(self.device))

    def _slots_of(self, block_table: Seq[int], length: int) -> torch.Tensor:
        blocks = torch.tensor(block_table[: math.ceil(length / self.block_size)], dtype=torch.long)
        slots = (blocks[:, None] * self.block_size + torch.arange(self.block_size)).flatten()  # [nb * bs]
        return slots[:length]

    def _tensor(self, values: list[int]) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=torch.long)
        return tensor if self.on_host else tensor.to(self.device)
