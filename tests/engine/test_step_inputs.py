"""`StepLayout`: a plan as one flat batch, decode tokens first, with its attention metadata."""

from __future__ import annotations

import torch

from tests.engine.test_llama import make_seq, plan_of
from tokenyard.engine.modeling.attention import PagedAttention
from tokenyard.engine.step_inputs import StepLayout

BLOCK = 4


def layout(*, use_native: bool = False) -> StepLayout:
    cache = torch.zeros(1, 1, 10 * BLOCK + 1, 16)  # [layers, Hkv, slots, D]
    return StepLayout(PagedAttention(cache, cache.clone(), scale=0.25, use_native=use_native), BLOCK)


def test_decode_rows_come_first_and_each_chunk_knows_its_rows() -> None:
    prompt, decoding = make_seq([10, 11, 12, 13, 14, 15]), make_seq([20, 21, 22])
    prompt.block_table, decoding.block_table = [5, 2], [7]
    inputs = layout()(plan_of((prompt, 2, 4, True), (decoding, 2, 1, True)))
    assert inputs.input_ids.tolist() == [22, 12, 13, 14, 15]
    assert inputs.positions.tolist() == [2, 2, 3, 4, 5]
    assert inputs.first_rows == [1, 0]  # plan order: the prompt chunk, then the decode
    assert inputs.sample_rows.tolist() == [4, 0]  # each sampled chunk's last row, in plan order
    meta = inputs.meta
    # slot = block * 4 + offset: the decode's position 2 in block 7, the chunk's positions 2-5 in blocks 5 and 2
    assert meta.slot_mapping.tolist() == [30, 22, 23, 8, 9]
    assert meta.num_decode == 1 and len(meta.prefills) == 1
    chunk = meta.prefills[0]
    assert (chunk.start, chunk.length, chunk.slots.tolist()) == (1, 4, [20, 21, 22, 23, 8, 9])
    assert chunk.mask is not None and chunk.mask.shape == (4, 6)  # it attends to the two cached tokens too
    assert meta.decode_slots is not None and meta.decode_slots[0, :3].tolist() == [28, 29, 30]


def test_decode_metadata_takes_the_form_the_attention_kernel_reads() -> None:
    short, long = make_seq([1, 2]), make_seq([1, 2, 3, 4, 5, 6])
    short.block_table, long.block_table = [3], [1, 4]
    plan = plan_of((short, 1, 1, True), (long, 5, 1, True))
    meta = layout(use_native=False)(plan).meta
    assert meta.decode_lengths is None and meta.decode_mask is not None  # torch reads a mask
    assert meta.decode_mask[:, 0].tolist() == [[True, True] + [False] * 6, [True] * 6 + [False] * 2]
    attention = layout().attention
    slots, mask, lengths = attention.decode_inputs(torch.tensor([[4, 5, 6, 7]]), torch.tensor([4]))
    assert mask is None and lengths is None and slots.tolist() == [[4, 5, 6, 7]]  # all full: no mask at all
