"""CUDA graphs for decode-only steps: one captured forward per (batch, context width) bucket.

On a GPU a small model's decode step is bound by kernel launches, not by the GPU: it issues hundreds
of kernels per step, each costing microseconds of CPU to launch, while the GPU finishes each in less
(docs/engine.md, "Measurements behind the code"). A CUDA graph replays a whole step's kernels with
one launch. Graphs need fixed shapes and fixed addresses, so a decode step is padded (the batch up to
the next batch bucket, every context up to the next width bucket) and its inputs are copied into
static buffers that the graph reads. The runner chooses this path once, on a GPU (engine/decode_paths.py).

Padding rows are harmless by construction: they write their K/V to a scratch slot past the last
real one (the runner allocates it) and attend to that slot alone, so they can neither overwrite nor
leak into a real sequence's cache; their logits are cut off before sampling. Steps with prompt
chunks, and steps wider or larger than the biggest bucket, run eagerly as before.

With `capture=False` the same padded path runs eagerly (on any device); tests use it on CPU to check
the padding against the plain path, and the CUDA test checks the captured graphs against it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from tokenyard.engine.modeling.attention import AttentionMetadata, PagedAttention
from tokenyard.engine.modeling.llama import LlamaModel

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)
MIN_WIDTH = 256  # context width buckets: 256, 512, 1024, ... (KV slots gathered per sequence)
MAX_WIDTH = 8192  # longer contexts decode eagerly: a [batch, width] slot table per graph must stay small


def bucket_sizes(limit: int, first: int, sizes: tuple[int, ...] | None = None) -> list[int]:
    """Ascending bucket sizes covering 1..limit: `sizes` below `limit` (or powers of two from `first`),
    then `limit` itself as the last one."""
    candidates = sizes or tuple(first << k for k in range(32))
    return [size for size in candidates if size < limit] + [limit]


class DecodeGraphs:
    """Captured (or, with capture=False, padded eager) decode forwards, made lazily per bucket."""

    def __init__(
        self,
        model: LlamaModel,
        attention: PagedAttention,
        *,
        max_batch: int,
        max_context: int,
        scratch_slot: int,
        capture: bool,
    ) -> None:
        self.model, self.attention, self.capture = model, attention, capture
        self.batches = bucket_sizes(min(max_batch, BATCH_BUCKETS[-1]), 1, BATCH_BUCKETS)
        self.widths = bucket_sizes(min(max_context, MAX_WIDTH), MIN_WIDTH)
        batch, width, device = self.batches[-1], self.widths[-1], attention.k_cache.device
        self.scratch_slot = scratch_slot
        # Rows: token id, position, slot to write, context length; one host-to-device copy per step.
        self.inputs = torch.zeros(4, batch, dtype=torch.long, device=device)
        self.slots = torch.full((batch, width), scratch_slot, dtype=torch.long, device=device)  # [B, W]
        self.columns = torch.arange(width, device=device)  # [W]
        self._host = torch.zeros(4, batch, dtype=torch.long, pin_memory=device.type == "cuda")
        self._forwards: dict[tuple[int, int], Callable[[], torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if capture else None

    def bucket(self, batch: int, width: int) -> tuple[int, int] | None:
        """The (batch, width) bucket a step of `batch` sequences with contexts up to `width` runs in."""
        b, w = bisect.bisect_left(self.batches, batch), bisect.bisect_left(self.widths, width)
        if b == len(self.batches) or w == len(self.widths):
            return None
        return self.batches[b], self.widths[w]

    def run(
        self,
        bucket: tuple[int, int],
        token_ids: list[int],
        positions: list[int],
        new_slots: list[int],
        context_slots: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [B, V] for B decoding sequences; context_slots [B, L] (host), L <= the bucket's width,
        holds each sequence's cache slots oldest first (past its length: any valid slot, masked)."""
        batch, (padded, width) = len(token_ids), bucket
        host = self._host[:, :padded]
        host[0, :batch], host[1, :batch] = torch.tensor(token_ids), torch.tensor(positions)
        host[2, :batch], host[3, :batch] = torch.tensor(new_slots), torch.tensor(positions) + 1
        # Padding rows write to the scratch slot and see only it (length 1, first slot the scratch one).
        host[0, batch:], host[1, batch:], host[2, batch:], host[3, batch:] = 0, 0, self.scratch_slot, 1
        self.inputs[:, :padded].copy_(host, non_blocking=True)
        context_slots = context_slots[:, :width]  # past every length: masked, so cut to the bucket
        self.slots[:batch, : context_slots.shape[1]].copy_(context_slots, non_blocking=True)
        self.slots[batch:padded, 0] = self.scratch_slot
        forward = self._forwards.get(bucket) or self._make(bucket)
        return forward()[:batch].clone()

    def _padded_forward(self, bucket: tuple[int, int]) -> torch.Tensor:
        """The model over the static buffers of one bucket; what a graph records."""
        batch, width = bucket
        ids, positions, new_slots, lengths = self.inputs[:, :batch]
        mask = (self.columns[:width] < lengths[:, None])[:, None, :]  # [B, 1, W]
        meta = AttentionMetadata(
            slot_mapping=new_slots, num_decode=batch, decode_slots=self.slots[:batch, :width], decode_mask=mask
        )
        return self.model.compute_logits(self.model(ids, positions, self.attention.bind(meta)))  # [B, V]

    def _make(self, bucket: tuple[int, int]) -> Callable[[], torch.Tensor]:
        if not self.capture:
            forward = lambda: self._padded_forward(bucket)  # noqa: E731
            self._forwards[bucket] = forward
            return forward
        # A warm-up run on a side stream first (cuBLAS picks its kernels and workspaces), as capture
        # requires; it computes this step's real K/V, which the replay then writes again unchanged.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._padded_forward(bucket)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._padded_forward(bucket)

        def replay() -> torch.Tensor:
            graph.replay()
            return logits

        self._forwards[bucket] = replay
        return replay

    @property
    def captured(self) -> int:
        """How many buckets have a forward so far."""
        return len(self._forwards)
