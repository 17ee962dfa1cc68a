"""How a model's decode-only steps run: chosen once, when the runner is built.

Every step with a prompt chunk runs the model's own forward (torch, with whichever native kernels its
layers and attention have). Decode-only steps, the bulk of serving, can go faster, and which way is a
property of the model and the device, so `choose_decode_path` decides it once:
- `GraphDecode` replays CUDA graphs (modeling/decode_graphs.py): "cuda-graphs"; with capture off the
  same padded path runs eagerly (how CPU tests check it): "torch";
- `NativeDecode` runs every layer in one native call on the CPU (modeling/native_decode.py): "native";
- `EagerDecode`: nothing faster, the model's forward: "torch".
The choice's `kernel_path` is what operators see (the engine's stats and `tokenyard_engine_info`). A
path still declines a step it cannot take (more sequences than a graph bucket or the native loop
holds, a context wider than the widest graph); the runner then runs the model's forward for it.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch

from tokenyard.engine.modeling.attention import PagedAttention
from tokenyard.engine.modeling.decode_graphs import DecodeGraphs
from tokenyard.engine.modeling.llama import LlamaModel
from tokenyard.engine.modeling.native_decode import NativeDecoder
from tokenyard.engine.scheduler import SchedulerPlan
from tokenyard.engine.step_inputs import StepLayout

KernelPath = Literal["native", "torch", "cuda-graphs", "transformers"]
DecodeGraphMode = Literal["off", "eager", "capture"]


class DecodePath(Protocol):
    """A way to run decode-only steps."""

    @property
    def kernel_path(self) -> KernelPath: ...

    def logits(self, plan: SchedulerPlan) -> torch.Tensor | None:
        """Logits [N, V] (float32) of the plan's sampled chunks, or None for a step this path does not take."""
        ...


class EagerDecode:
    """No faster way: every step runs the model's forward."""

    kernel_path: KernelPath = "torch"

    def logits(self, plan: SchedulerPlan) -> torch.Tensor | None:
        return None


class NativeDecode:
    """Decode-only steps of up to `decoder.max_rows` sequences through the native layer loop."""

    kernel_path: KernelPath = "native"

    def __init__(self, decoder: NativeDecoder, layout: StepLayout) -> None:
        self.decoder, self.layout = decoder, layout

    def logits(self, plan: SchedulerPlan) -> torch.Tensor | None:
        chunks = plan.chunks
        if not 0 < len(chunks) <= self.decoder.max_rows or any(chunk.num_tokens != 1 for chunk in chunks):
            return None
        every_row_sampled = all(chunk.sample for chunk in chunks)
        if every_row_sampled and self.decoder.whole_step is not None:
            return self.decoder.step(chunks)  # the common step: one native call from ids to logits
        inputs = self.layout(plan)
        hidden = self.decoder(inputs.input_ids, inputs.positions, inputs.meta)  # [T, hidden]
        if every_row_sampled:  # in order: no gather needed
            return self.decoder.logits(hidden)
        return self.decoder.logits(hidden[inputs.sample_rows])  # [N, V]


class GraphDecode:
    """Decode-only steps padded to a (batch, width) bucket and run by its CUDA graph."""

    def __init__(self, graphs: DecodeGraphs, layout: StepLayout) -> None:
        self.graphs, self.layout = graphs, layout
        self.kernel_path: KernelPath = "cuda-graphs" if graphs.capture else "torch"

    def logits(self, plan: SchedulerPlan) -> torch.Tensor | None:
        decodes = plan.chunks
        if not decodes or any(chunk.num_tokens != 1 or not chunk.sample for chunk in decodes):
            return None
        slots, lengths = self.layout.context_slots(decodes)  # [B, L], [B] (host)
        bucket = self.graphs.bucket(len(decodes), int(lengths.max()))
        if bucket is None:
            return None
        positions = [chunk.start for chunk in decodes]
        ids = [chunk.seq.token_at(chunk.start) for chunk in decodes]
        new_slots = [self.layout.slot(chunk.seq.block_table, chunk.start) for chunk in decodes]
        return self.graphs.run(bucket, ids, positions, new_slots, slots)


def choose_decode_path(
    model: LlamaModel,
    attention: PagedAttention,
    layout: StepLayout,
    *,
    decode_graphs: DecodeGraphMode,
    max_batch: int,
    scratch_slot: int,
) -> DecodePath:
    """Graphs where asked for (a GPU), else the native loop where the model's layers have kernels for it
    (a CPU), else the model's forward. `scratch_slot`: the cache slot padded graph rows write to."""
    if decode_graphs != "off":
        graphs = DecodeGraphs(
            model,
            attention,
            max_batch=max_batch,
            max_context=int(model.rope.shape[0]),
            scratch_slot=scratch_slot,
            capture=decode_graphs == "capture",
        )
        return GraphDecode(graphs, layout)
    decoder = NativeDecoder.build(model, attention, layout.block_size)
    return NativeDecode(decoder, layout) if decoder is not None else EagerDecode()
