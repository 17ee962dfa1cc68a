"""Incremental detokenisation and stop strings: turn a growing list of token ids into safe text deltas.

Two small pieces that any engine (this simple one, a batching one later) composes per request:

- `IncrementalDetokenizer` follows the prefix/read-offset scheme of Hugging Face TGI and vLLM: it
  decodes a short window of recent tokens twice (without and with the new tokens) and emits the
  difference. Decoding a window rather than single tokens keeps SentencePiece's leading spaces
  right, and a delta that ends in U+FFFD (the bytes of a character cut between byte-level tokens)
  is held back until a later token completes the character, so a stream never carries half a
  Chinese character or emoji.
- `StopStringMatcher` holds back any tail that could be the start of a stop string, so a stop string
  is never half-emitted, and cuts the text before the stop string when it completes.

Both are pure Python (no torch): `decode` is any callable from token ids to text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens kept as left context for the first output token (enough for a leading-space rule).
_PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Feed token ids one or more at a time; get back only complete, newly decoded text."""

    def __init__(self, decode: Decode, prompt_token_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        # ids[prefix:read] is context already emitted; ids[read:] is not emitted yet.
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def add(self, token_ids: Sequence[int]) -> str:
        """Append tokens; return the new text, or "" while it would end in a cut character."""
        self._ids.extend(token_ids)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :]

    def flush(self) -> str:
        """At the end of a generation: whatever is still held back, replacement characters included."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :] if len(full_text) > len(prefix_text) else ""


class StopStringMatcher:
    """Streams text through, withholding anything that might still become one of the stop strings."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    @property
    def num_held(self) -> int:
        """Characters withheld because they might begin a stop string."""
        return len(self._held)

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit now; after a stop string completes, `stopped` is True."""
        if self.stopped:
            return ""
        buffer = self._held + text
        cut = self._first_match(buffer)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The generation ended for another reason: the held tail was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _first_match(self, buffer: str) -> int | None:
        positions = [i for i in (buffer.find(s) for s in self._stop) if i >= 0]
        return min(positions) if positions else None

    def _longest_partial_suffix(self, buffer: str) -> int:
        """Length of the longest tail of `buffer` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if stop.startswith(buffer[-size:]):
                    longest = size
                    break
        return longest
