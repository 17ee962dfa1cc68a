"""The prefix cache is partitioned by cache salt (the tenant): equal prompts share blocks only within one."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.sequence import Sequence


def seq(tokens: Seq[int], name: str, salt: str | None) -> Sequence:
    params = SamplingParams(max_tokens=8, cache_salt=salt)
    return Sequence(name, tokens, params, decode=str, eos_token_ids=(), context_length=999)


def computed(manager: BlockManager, s: Sequence) -> Sequence:
    manager.allocate(s, s.num_tokens)
    s.num_computed_tokens = s.num_tokens
    manager.commit(s)
    return s


def test_another_tenant_gets_no_cached_tokens_from_an_identical_prompt() -> None:
    manager = BlockManager(num_blocks=16, block_size=4)
    computed(manager, seq(range(10), "a1", "tenant-a"))
    assert manager.match_prefix(seq(range(10), "b1", "tenant-b")) == 0
    assert not manager.pending_prefix(seq(range(10), "b2", "tenant-b"))
    assert manager.match_prefix(seq(range(10), "unsalted", None)) == 0
    assert manager.match_prefix(seq(range(10), "a2", "tenant-a")) == 8  # the same tenant still shares


def test_unsalted_sequences_share_as_before() -> None:
    manager = BlockManager(num_blocks=16, block_size=4)
    computed(manager, seq(range(10), "x", None))
    assert manager.match_prefix(seq(range(10), "y", None)) == 8
