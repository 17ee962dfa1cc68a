"""The word filter on generated text, one choice at a time, as it streams.

Text is held back only while its tail could still become a listed word (or an allowed word that
excuses one): `Matcher.hold_start` on the normalised text, so separators between a word's characters
and a word split across chunks are both caught. Everything before that is released at once, masked
(one "*" per character of a hit, separators between its characters kept) or, with the `stop`
action, cut just before the first hit, after which the choice produces nothing more.

A little of the released text is kept as context, so the next chunk's first word knows whether it
starts mid-word and what separates it from the text before.
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
        self._matcher = matcher
        self._action = action
        self._context = ""  # released text, unmasked, for reading what follows
        self._pending = ""  # received, not released yet
        self._masked: set[int] = set()  # indexes into _pending already found to be in a hit
        self.stopped = False

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
        hold = len(norm.text) if final else self._matcher.hold_start(norm)
        cut = len(self._pending) if hold == len(norm.text) else norm.origin[hold] - offset
        # A hit starting in the held tail is judged later, when all of it and its surroundings are in.
        hits = [hit for hit in self._matcher.hits(norm) if hit.start < hold and norm.origin[hit.start] >= offset]
        if hits and self._action == "stop":
            first = min(hits, key=lambda hit: hit.start)
            self.stopped = True
            return Scanned(self._release(norm.origin[first.start] - offset), [first], stopped=True)
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


def scan_whole(matcher: Matcher, action: OutputAction, text: str) -> Scanned:
    """A whole text at once (a choice that was not streamed)."""
    scanner = ChoiceScanner(matcher, action)
    first = scanner.feed(text)
    if first.stopped:
        return first
    rest = scanner.finish()
    return Scanned(first.text + rest.text, first.hits + rest.hits, rest.stopped)
