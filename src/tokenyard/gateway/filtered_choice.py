"""One choice of an answer through the word filter: its text and its logprobs together.

The text goes through an `output_scan.ChoiceScanner`. Logprob entries would give away what it masks
or withholds, so each generated token's entry is held until all of the text it overlaps has been
released, and then:
- a token overlapping a masked character, or one past a stop's cut, is rewritten to the text the
  client got for it (`" Paris"` becomes `" *****"`, its `bytes` that text's UTF-8) and loses its
  alternatives; a token entirely past the cut is dropped;
- an alternative in `top_logprobs` that would be part of a listed word, read between the text before
  its position and the text after it, is dropped (in the prompt's echoed logprobs too).
Entries whose bytes do not decode to exactly their chunk's text (a resumed stream's first chunk, a
token cut by a stop string) are judged by the whole chunk and by their own text.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass

from tokenyard.governance.output_scan import CONTEXT_CHARS, ChoiceScanner, Scanned, spells_word
from tokenyard.governance.wordfilter import Matcher
from tokenyard.protocol.internal import GenerateChunk, TokenLogprobs


@dataclass
class _Held:
    """A token's entry with the characters of the choice's text it stands for."""

    entry: TokenLogprobs
    start: int  # its text, if rewritten, is shown[start:end]
    end: int
    watch: tuple[int, int]  # the characters whose masking rewrites it; it waits until they are released
    aligned: bool  # its bytes are exactly raw[start:end] (plus part of the next character)


def _decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _spans(decoder: codecs.IncrementalDecoder, entries: Sequence[TokenLogprobs], start: int, text: str) -> list[_Held]:
    """Where each token's text lies in the chunk's text, which starts at `start` in the choice's text.
    `decoder` carries a character split between the previous chunk's last token and this one's first."""
    held, pos, decoded = [], start, ""
    for entry in entries:
        piece = decoder.decode(bytes(entry.bytes))
        partial = bool(decoder.getstate()[0])  # it ends inside a character: it overlaps that one too
        held.append(_Held(entry, pos, pos + len(piece), (pos, pos + len(piece) + partial), True))
        pos, decoded = pos + len(piece), decoded + piece
    if decoded == text:
        return held
    end = start + len(text)
    for item in held:  # judged together: any hidden character of the chunk rewrites them all
        item.start, item.end = min(item.start, end), min(item.end, end)
        item.watch, item.aligned = (start, end), False
    if held:
        held[-1].end = end
    decoder.reset()
    return held


class LogprobHold:
    """One choice's generated tokens' entries, released with their text as the client got it."""

    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher
        self._raw = ""  # the choice's text as generated (after an echoed prompt), received so far
        self._shown = ""  # what the client got of it: as long as the released text, masked; cut at a stop
        self._held: list[_Held] = []
        self._decoder = _decoder()

    def prime(self, text: str) -> None:
        """The echoed prompt: shown as it is, and what the first tokens' alternatives are read after."""
        self._raw = self._shown = text

    def add(self, text: str, entries: Sequence[TokenLogprobs]) -> None:
        self._held += _spans(self._decoder, entries, len(self._raw), text)
        self._raw += text

    def release(self, shown: str, *, stopped: bool, final: bool) -> list[TokenLogprobs]:
        """The scanner released `shown`: the entries whose text is all out now (all of them at the end;
        at a stop, those that start before the cut), rewritten where their text was hidden."""
        self._shown += shown
        done = len(self._shown)
        count = 0
        while count < len(self._held) and (final or stopped or self._held[count].watch[1] <= done):
            count += 1
        out, self._held = self._held[:count], self._held[count:]
        return [self._rewritten(item) for item in out if not (stopped and item.start >= done)]

    def _rewritten(self, item: _Held) -> TokenLogprobs:
        entry = item.entry
        hidden = any(self._hidden(i) for i in range(*item.watch))
        if not hidden and not item.aligned:
            hidden = self._spells(item, entry.token)
        if hidden:
            shown = self._shown[item.start : min(item.end, len(self._shown))]
            return entry.model_copy(update={"token": shown, "bytes": list(shown.encode()), "top_logprobs": []})
        kept = [alt for alt in entry.top_logprobs if not self._spells(item, alt.token)]
        return entry if len(kept) == len(entry.top_logprobs) else entry.model_copy(update={"top_logprobs": kept})

    def _hidden(self, index: int) -> bool:
        """Whether the client did not get character `index` as generated (masked, or past a stop)."""
        return index >= len(self._shown) or (index < len(self._raw) and self._shown[index] != self._raw[index])

    def _spells(self, item: _Held, piece: str) -> bool:
        before = self._raw[max(0, item.start - CONTEXT_CHARS) : item.start]
        return spells_word(self._matcher, before, piece, self._raw[item.end : item.end + CONTEXT_CHARS])


def prompt_logprobs(matcher: Matcher, entries: Sequence[TokenLogprobs]) -> list[TokenLogprobs]:
    """An echoed prompt's entries without alternatives that would spell a listed word in the prompt
    (its own tokens were screened with the request)."""
    text = bytes(b for entry in entries for b in entry.bytes).decode(errors="replace")
    hold = LogprobHold(matcher)
    hold.add(text, entries)
    return hold.release(text, stopped=False, final=True)


class FilteredChoice:
    """One choice's scanner and logprob hold: each chunk's text filtered, its entries with it."""

    def __init__(self, scanner: ChoiceScanner) -> None:
        self.scanner = scanner
        self._logprobs = LogprobHold(scanner.matcher)
        self._started = False

    def apply(self, chunk: GenerateChunk) -> tuple[GenerateChunk, Scanned]:
        update: dict[str, object] = {}
        if not self._started and chunk.prompt_text is not None:
            self.scanner.prime(chunk.prompt_text)
            self._logprobs.prime(chunk.prompt_text)
        if chunk.prompt_logprobs is not None:
            update["prompt_logprobs"] = prompt_logprobs(self.scanner.matcher, chunk.prompt_logprobs)
        self._started = True
        self._logprobs.add(chunk.text, chunk.logprobs or [])
        scanned = _scan(self.scanner, chunk)
        final = chunk.finish_reason is not None
        released = self._logprobs.release(scanned.text, stopped=scanned.stopped, final=final)
        update["text"] = scanned.text
        if chunk.logprobs is not None or released:
            update["logprobs"] = released
        if scanned.stopped:
            update["finish_reason"] = "content_filter"
        return chunk.model_copy(update=update), scanned


def _scan(scanner: ChoiceScanner, chunk: GenerateChunk) -> Scanned:
    scanned = scanner.feed(chunk.text)
    if chunk.finish_reason is None or scanned.stopped:
        return scanned
    rest = scanner.finish()
    return Scanned(scanned.text + rest.text, scanned.hits + rest.hits, rest.stopped)
