"""The word filter's matcher: listed words found in a text after normalisation, allow lists applied.

One Aho-Corasick automaton (pyahocorasick) holds every listed and allowed word of a tenant, keyed by
its normalised form (textnorm). A key found in the normalised text is a hit if:
- its edges respect word boundaries where the script has them: "sex" is not found in "Essex" or
  "sexy", while "买meth" (a Latin word inside Chinese text) is;
- the separators inside it are an evasion, not a coincidence: none, only where the listed word has
  its own ("crystal meth"), between every pair of characters ("s e x", "敏，感，词"; a two-character
  word only with soft separators: "伟大，麻醉" is not "大麻"), or soft separators between ideographs
  ("敏 感词"). In spaced scripts a space in only some places is where words meet ("that's ex-wife").
A listed hit inside an allowed hit ("大麻" inside "大麻烦") is excused.

`hold_start` serves streaming: where the text's tail could still become a hit once more arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from tokenyard.governance.textnorm import GAP_HARD, GAP_NONE, GAP_SOFT, Normalised, is_spaced
from tokenyard.governance.wordlists import Rule


@dataclass(frozen=True)
class Hit:
    """A rule found in a normalised text: characters [start, end) of `Normalised.text`."""

    rule: Rule
    start: int
    end: int


class Matcher:
    """Listed and allowed words of one tenant (the global lists plus the tenant's own)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        by_key: dict[str, list[Rule]] = {}
        for rule in rules:
            by_key.setdefault(rule.key, []).append(rule)
        self._automaton = ahocorasick.Automaton()
        for key, keyed in by_key.items():
            self._automaton.add_word(key, tuple(keyed))
        self.longest = max((len(key) for key in by_key), default=0)
        self.num_listed = sum(1 for keyed in by_key.values() for rule in keyed if not rule.allow)
        if by_key:
            self._automaton.make_automaton()

    def hits(self, norm: Normalised) -> list[Hit]:
        """Every listed word in the text that no allowed word covers, in order of their ends."""
        if not self.longest or not norm.text:
            return []
        found = []
        for last, rules in self._automaton.iter(norm.text):
            for rule in rules:
                hit = Hit(rule, last + 1 - len(rule.key), last + 1)
                if _at_word_edges(norm, hit) and (rule.allow or _gaps_are_evasion(norm, hit)):
                    found.append(hit)
        allowed = [hit for hit in found if hit.rule.allow]
        return [
            hit
            for hit in found
            if not hit.rule.allow and not any(a.start <= hit.start and hit.end <= a.end for a in allowed)
        ]

    def hold_start(self, norm: Normalised) -> int:
        """The first index of the longest tail of the text that is the beginning of some word (listed
        or allowed) and could still start one there; len(text) if none. Text from there on must wait
        for more: it may yet become a hit, or an allowed word that excuses one."""
        size = len(norm.text)
        for start in range(max(0, size - self.longest), size):
            if is_spaced(norm.text[start]) and norm.joined_before(start):
                continue  # mid-word in a spaced script: no word can start here
            if self._automaton.match(norm.text[start:]):
                return start
        return size


def _at_word_edges(norm: Normalised, hit: Hit) -> bool:
    key = hit.rule.key
    if is_spaced(key[0]) and norm.joined_before(hit.start):
        return False
    return not (is_spaced(key[-1]) and norm.joined_after(hit.end))


def _gaps_are_evasion(norm: Normalised, hit: Hit) -> bool:
    """Whether the separators inside a hit were put there to split the word (see the module doc)."""
    key, own = hit.rule.key, hit.rule.word_gaps
    free = [i for i in range(1, len(key)) if i not in own]
    inserted = [i for i in free if norm.gap[hit.start + i] != GAP_NONE]
    if not inserted:
        return True
    kinds = {norm.gap[hit.start + i] for i in inserted}
    if len(inserted) == len(free) and (GAP_HARD not in kinds or len(free) >= 2):
        return True  # spelled out: a separator between every pair of characters
    return all(
        norm.gap[hit.start + i] == GAP_SOFT and not is_spaced(key[i - 1]) and not is_spaced(key[i]) for i in inserted
    )
