"""Paged KV-cache bookkeeping: block ids, reference counts and a prefix cache. No tensors.

After nano-vllm's `BlockManager` and vLLM's automatic prefix caching. The cache is `num_blocks`
blocks of `block_size` token slots each; a sequence's `block_table` lists the blocks that hold its
tokens in order, so token `i` lives in slot `block_table[i // block_size] * block_size + i % block_size`.

A block that is full and whose KV has been computed gets a hash chained over all tokens up to its
end (its prefix). A new sequence whose first blocks hash the same reuses them (reference count + 1)
and skips computing them. Blocks nobody references stay in the free list with their contents, least
recently freed first, so an allocation evicts the oldest cached prefix only when it needs the room.
A full block whose hash is known but whose KV is still being computed by another sequence is
"pending": a request with the same prefix is held back (`pending_prefix`) until it is ready, so
identical prompts arriving together (n > 1 fanned out by the gateway) share one prefill.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from tokenyard.engine.sequence import Sequence


def block_hash(parent: int | None, tokens: Seq[int]) -> int:
    """A hash of a block's tokens and, through `parent`, of every token before it."""
    return hash((parent, tuple(tokens)))


def salt_hash(salt: str | None) -> int | None:
    """The parent hash of a sequence's first block: its cache salt (the tenant), as vLLM's cache_salt,
    so that two tenants' identical prompts never share cached blocks (nor learn of each other's)."""
    return None if salt is None else hash(("cache_salt", salt))


@dataclass
class Block:
    """One block of KV slots: who uses it and, once full and computed, which prefix it caches."""

    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = field(default=())  # kept to rule out hash collisions on a hit


class BlockManager:
    """Hands out KV blocks to sequences and keeps computed full blocks as a prefix cache."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks ({num_blocks}) and block_size ({block_size}) must both be positive")
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU first
        self._cached: dict[int, int] = {}  # prefix hash -> block id, for computed blocks
        self._pending: dict[int, int] = {}  # prefix hash -> block id, full but not computed yet
        self.num_prefix_queries = 0
        self.num_prefix_hits = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """How many more blocks `seq` needs so that its first `num_tokens` tokens have slots."""
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_tokens: int, reserve: int = 0) -> bool:
        return self.blocks_needed(seq, num_tokens) + reserve <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Give `seq` fresh blocks until its first `num_tokens` tokens have slots."""
        for _ in range(self.blocks_needed(seq, num_tokens)):
            seq.block_table.append(self._take_free())

    def deallocate(self, seq: Sequence) -> None:
        """Release `seq`'s blocks (newest first, so a prefix's tail is evicted before its head)."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is not None and self._pending.get(block.hash) == block_id:
                    del self._pending[block.hash]  # its KV was never finished: not reusable
                    block.hash = None
                self._free[block_id] = None
        seq.block_table.clear()
        seq.num_computed_tokens = seq.num_hashed_blocks = 0

    # --- prefix cache -------------------------------------------------------------------------

    def _prefix_hashes(self, seq: Sequence, limit: int, first: int = 0) -> list[tuple[int, tuple[int, ...]]]:
        """(hash, tokens) for each full block among the first `limit` tokens of `seq`, from block `first`."""
        if limit < (first + 1) * self.block_size:  # no new full block: the common decode step costs nothing
            return []
        parent = self.blocks[seq.block_table[first - 1]].hash if first else salt_hash(seq.params.cache_salt)
        hashes, tokens = [], seq.all_token_ids
        for start in range(first * self.block_size, limit - self.block_size + 1, self.block_size):
            chunk = tuple(tokens[start : start + self.block_size])
            parent = block_hash(parent, chunk)
            hashes.append((parent, chunk))
        return hashes

    def _reusable_limit(self, seq: Sequence) -> int:
        # The last token is always computed, so that the step that finishes the prompt has logits.
        return seq.num_tokens - 1

    def pending_prefix(self, seq: Sequence) -> bool:
        """True when another sequence is computing a block this one could reuse once it is ready."""
        for hash_, _ in self._prefix_hashes(seq, self._reusable_limit(seq)):
            if hash_ in self._cached:
                continue
            return hash_ in self._pending
        return False

    def match_prefix(self, seq: Sequence) -> int:
        """Attach the cached blocks that start `seq` (it must hold none); return the tokens they cover."""
        assert not seq.block_table, "match_prefix runs before a sequence holds blocks"
        self.num_prefix_queries += 1
        for hash_, chunk in self._prefix_hashes(seq, self._reusable_limit(seq)):
            block_id = self._cached.get(hash_)
            if block_id is None or self.blocks[block_id].token_ids != chunk:
                break
            if self.blocks[block_id].ref_count == 0:
                del self._free[block_id]
            self.blocks[block_id].ref_count += 1
            seq.block_table.append(block_id)
        matched = len(seq.block_table) * self.block_size
        seq.num_computed_tokens = seq.num_cached_tokens = matched
        seq.num_hashed_blocks = len(seq.block_table)
        self.num_prefix_hits += matched > 0
        return matched

    def mark_pending(self, seq: Sequence, num_tokens: int) -> None:
        """Announce the full blocks that `seq` is about to compute, up to `num_tokens` tokens."""
        first = seq.num_hashed_blocks
        for index, (hash_, chunk) in enumerate(self._prefix_hashes(seq, num_tokens, first), first):
            block = self.blocks[seq.block_table[index]]
            if block.hash is None and hash_ not in self._cached and hash_ not in self._pending:
                block.hash, block.token_ids = hash_, chunk
                self._pending[hash_] = block.block_id

    def commit(self, seq: Sequence) -> None:
        """After a step: every full block of `seq` whose KV is now computed becomes a cached prefix."""
        first = seq.num_hashed_blocks
        for index, (hash_, chunk) in enumerate(self._prefix_hashes(seq, seq.num_computed_tokens, first), first):
            block = self.blocks[seq.block_table[index]]
            if self._pending.get(hash_) == block.block_id:
                del self._pending[hash_]
            block.hash, block.token_ids = hash_, chunk
            self._cached.setdefault(hash_, block.block_id)  # a duplicate computed alongside stays unshared
            seq.num_hashed_blocks = index + 1

    def _take_free(self) -> int:
        """The least recently freed block, evicting the prefix it cached."""
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:
            if self._cached.get(block.hash) == block_id:
                del self._cached[block.hash]
            block.hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id

    def hit_rate(self) -> float:
        """The share of admitted sequences that reused at least one cached block."""
        return self.num_prefix_hits / self.num_prefix_queries if self.num_prefix_queries else 0.0
