"""BlockManager: allocation, reference counts, prefix caching, pending prefixes and LRU eviction."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import pytest

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.sequence import Sequence


def decode(ids: Seq[int]) -> str:
    return " ".join(map(str, ids))


def seq(tokens: Seq[int], name: str = "r") -> Sequence:
    return Sequence(name, tokens, SamplingParams(max_tokens=8), decode=decode, eos_token_ids=(), context_length=999)


def computed(manager: BlockManager, s: Sequence, num_tokens: int | None = None) -> Sequence:
    """Allocate and pretend a step computed the sequence's tokens."""
    num_tokens = s.num_tokens if num_tokens is None else num_tokens
    manager.allocate(s, num_tokens)
    s.num_computed_tokens = num_tokens
    manager.commit(s)
    return s


def test_allocate_and_deallocate_count_blocks() -> None:
    manager = BlockManager(num_blocks=4, block_size=4)
    s = seq(range(9))
    assert manager.blocks_needed(s, 9) == 3 and manager.can_allocate(s, 9)
    manager.allocate(s, 9)
    assert len(s.block_table) == 3 and manager.num_free_blocks == 1
    assert not manager.can_allocate(seq(range(100, 109)), 9)
    manager.deallocate(s)
    assert manager.num_free_blocks == 4 and s.block_table == []


def test_a_decode_takes_a_block_only_at_a_boundary() -> None:
    manager = BlockManager(num_blocks=3, block_size=4)
    s = computed(manager, seq(range(4)))
    assert len(s.block_table) == 1
    s.output_token_ids.append(7)
    assert manager.can_allocate(s, s.num_tokens)
    manager.allocate(s, s.num_tokens)
    assert len(s.block_table) == 2
    s.output_token_ids.append(8)
    manager.allocate(s, s.num_tokens)
    assert len(s.block_table) == 2


def test_second_sequence_reuses_full_cached_blocks_but_computes_its_last_token() -> None:
    manager = BlockManager(num_blocks=8, block_size=4)
    first = computed(manager, seq(range(10), "a"))
    second = seq([*range(8), 50, 51, 52], "b")
    assert manager.match_prefix(second) == 8
    assert second.block_table == first.block_table[:2]
    assert manager.blocks[first.block_table[0]].ref_count == 2
    exact = seq(range(8), "c")  # an 8-token prompt: the second block holds its last token, recomputed
    assert manager.match_prefix(exact) == 4
    assert manager.hit_rate() == 1.0


def test_freed_cached_blocks_are_reused_until_evicted_oldest_first() -> None:
    manager = BlockManager(num_blocks=3, block_size=2)
    old = computed(manager, seq([1, 2, 3], "old"))
    manager.deallocate(old)
    assert manager.num_free_blocks == 3
    again = seq([1, 2, 9], "again")
    assert manager.match_prefix(again) == 2  # still cached while unreferenced
    manager.deallocate(again)
    other = computed(manager, seq([5, 6, 7, 8, 4], "other"))  # needs all 3 blocks: evicts the cached one
    manager.deallocate(other)
    assert manager.match_prefix(seq([1, 2, 9], "late")) == 0


def test_a_prefix_being_computed_is_pending_until_committed() -> None:
    manager = BlockManager(num_blocks=8, block_size=4)
    leader, follower = seq(range(10), "leader"), seq(range(10), "follower")
    manager.allocate(leader, 10)
    manager.mark_pending(leader, 10)
    assert manager.pending_prefix(follower)
    leader.num_computed_tokens = 10
    manager.commit(leader)
    assert not manager.pending_prefix(follower)
    assert manager.match_prefix(follower) == 8


def test_a_pending_block_freed_before_it_was_computed_is_forgotten() -> None:
    manager = BlockManager(num_blocks=4, block_size=4)
    leader = seq(range(10), "leader")
    manager.allocate(leader, 10)
    manager.mark_pending(leader, 10)
    manager.deallocate(leader)
    follower = seq(range(10), "follower")
    assert not manager.pending_prefix(follower)
    assert manager.match_prefix(follower) == 0


def test_bad_sizes_name_both_values() -> None:
    with pytest.raises(ValueError, match=r"num_blocks \(0\) and block_size \(4\)"):
        BlockManager(num_blocks=0, block_size=4)
