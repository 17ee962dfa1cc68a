"""The word filter on generated text, one choice at a time, as it streams.

Text is held back only while its tail could still become a listed word (or an allowed word that
excuses one): `Matcher.hold_start` on the normalised text, so separators between a word's characters
and a word split across chunks are both caught. Everything before that is released at once, masked
(one "*" per character of a hit, separators between its characters kept) or, with the `stop`
action, cut just before the first hit, after which the choice produces nothing more.

A little of the released text is kept as context, so the next chunk's first word knows whether it
starts mid-word and what separates it from the text before. A completion's echoed prompt primes that
context: a word begun at the prompt's end and finished by the answer is caught in the answer's part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenyard.governance.textnorm import normalise
from tokenyard.governance.wordfilter import Hit, Matcher
from tokenyard.governance.wordlists import OutputAction

CONTEXT_CHARS = 16  # of released text kept to read the next chunk's first word in context
MASK = "*"


@dataclass
class Scanned:
    """What one call released: text that may be sent now, the hits acted on, and whether it stopped."""

    text: str = ""
    hits: list[Hit] = field(default_factory=list)
    stopped: bool = False


class ChoiceScanner:
    def __init__(self, matcher: Matcher, action: OutputAction) -> None:
        self.matcher = matcher
        self._action = action
        self._context = ""  # released text, unmasked, for reading what follows
        self._pending = ""  # received, not released yet
        self._masked: set[int] = set()  # indexes into _pending already found to be in a hit
        self.stopped = False

    def prime(self, text: str) -> None:
        """Text the client sees just before the answer (an echoed prompt): context only, never held."""
        self._context = text[-CONTEXT_CHARS:]

    def feed(self, text: str) -> Scanned:
        """Take the next piece of the choice's text; release what can no longer become a hit."""
        if self.stopped:
            return Scanned(stopped=True)
        self._pending += text
        return self._scan(final=False)

    def finish(self) -> Scanned:
        """The choice ended: judge and release everything still held."""
        if self.stopped:
            return Scanned(stopped=True)
        return self._scan(final=True)

    @property
    def held(self) -> str:
        """The text received and not yet released (for tests and metrics of the delay)."""
        return self._pending

    def _scan(self, *, final: bool) -> Scanned:
        offset = len(self._context)
        norm = normalise(self._context + self._pending)
        hold = len(norm.text) if final else self.matcher.hold_start(norm)
        cut = len(self._pending) if hold == len(norm.text) else max(0, norm.origin[hold] - offset)
        # A hit starting in the held tail is judged later, when all of it and its surroundings are in;
        # one ending in the context was judged before (or is the prompt's, screened on input).
        hits = [hit for hit in self.matcher.hits(norm) if hit.start < hold and norm.origin[hit.end - 1] >= offset]
        if hits and self._action == "stop":
            first = min(hits, key=lambda hit: hit.start)
            self.stopped = True
            return Scanned(self._release(max(0, norm.origin[first.start] - offset)), [first], stopped=True)
        for hit in hits:
            self._masked.update(norm.origin[i] - offset for i in range(hit.start, hit.end))
        return Scanned(self._release(cut), hits)

    def _release(self, cut: int) -> str:
        """Pending text up to `cut`, masked; it becomes context and leaves the pending text."""
        released = self._pending[:cut]
        shown = "".join(MASK if i in self._masked else char for i, char in enumerate(released))
        self._context = (self._context + released)[-CONTEXT_CHARS:]
        self._pending = self._pending[cut:]
        self._masked = {i - cut for i in self._masked if i >= cut}
        return shown


def spells_word(matcher: Matcher, before: str, piece: str, after: str) -> bool:
    """Whether `piece`, read between `before` and `after`, is part of a listed word (allow lists applied)."""
    norm = normalise(before + piece + after)
    start, end = len(before), len(before) + len(piece)
    return any(start <= norm.origin[hit.end - 1] and norm.origin[hit.start] < end for hit in matcher.hits(norm))


def scan_whole(matcher: Matcher, action: OutputAction, text: str) -> Scanned:
    """A whole text at once (a choice that was not streamed)."""
    scanner = ChoiceScanner(matcher, action)
    first = scanner.feed(text)
    if first.stopped:
        return first
    rest = scanner.finish()
    return Scanned(first.text + rest.text, first.hits + rest.hits, rest.stopped)
