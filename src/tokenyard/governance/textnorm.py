"""Text normalisation for the word filter: the form in which listed words and texts are compared.

Each character is folded on its own: NFKC (full-width to half-width, compatibility forms such as
"①" or "ﬁ"), then case folding; Latin, Greek and Cyrillic letters also lose their accents ("cócaine"
is "cocaine"). Folding one character at a time keeps, for every normalised character, the index of
the original character it came from, so the output filter can mask or cut the original text.

Each folded character is then one of three kinds:
- kept: letters, digits, ideographs; these are what words are matched on;
- transparent: zero-width and other format characters, combining marks, variation selectors and
  Hangul fillers; dropped as if they were not there ("敏\u200b感词" is "敏感词");
- separator: spaces, punctuation, symbols; dropped, but remembered as a gap before the next kept
  character, so the matcher can tell "敏 感 词" (letters spaced out to evade a list) from two words
  that merely meet across a sentence boundary. A gap is hard when it holds clause punctuation or a
  line break (where natural text breaks), soft otherwise (what evasions insert).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

GAP_NONE, GAP_SOFT, GAP_HARD = 0, 1, 2
_KEPT, _TRANSPARENT = -1, -2

# After NFKC: full-width ，；：！？ are already their ASCII forms; 。 and 、 have none.
_HARD_SEPARATORS = frozenset(",;:!?。、\n\r\x0b\x0c\x85\u2028\u2029")
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers: letters by category, invisible in use
_ACCENT_FOLDED_BELOW = 0x0530  # Latin, Greek and Cyrillic end here
# Scripts below this code point separate words with spaces (Latin, Greek, Cyrillic, Arabic, Indic...);
# from the CJK radicals on, words run together, so a listed word there has no boundaries to respect.
_SPACED_SCRIPTS_BELOW = 0x2E80


def is_spaced(char: str) -> bool:
    """A kept character of a script that puts spaces between words (a word in it has edges)."""
    return ord(char) < _SPACED_SCRIPTS_BELOW


@lru_cache(maxsize=65536)
def fold(char: str) -> tuple[tuple[str, int], ...]:
    """One original character as normalised characters, each with its kind: _KEPT, _TRANSPARENT or
    the GAP_* a separator opens."""
    folded = unicodedata.normalize("NFKC", char).casefold()
    if folded and ord(folded[0]) < _ACCENT_FOLDED_BELOW:
        folded = unicodedata.normalize("NFKD", folded)  # accents become combining marks, dropped below
    else:
        folded = unicodedata.normalize("NFKC", folded)  # case folding can leave a non-NFKC form
    return tuple((c, _kind(c)) for c in folded)


def _kind(char: str) -> int:
    category = unicodedata.category(char)
    if category[0] == "M" or category == "Cf" or char in _FILLERS:
        return _TRANSPARENT
    if char.isalnum():
        return _KEPT
    return GAP_HARD if char in _HARD_SEPARATORS else GAP_SOFT


@dataclass(frozen=True)
class Normalised:
    """A text as the matcher sees it.

    text: the kept characters, folded. origin[i]: the index in the original text of the character
    text[i] came from. gap[i]: the GAP_* of the separators between text[i-1] and text[i] (for i = 0,
    of those before text[0]). tail_gap: the separators after the last kept character.
    """

    text: str
    origin: tuple[int, ...]
    gap: tuple[int, ...]
    tail_gap: int

    def joined_before(self, index: int) -> bool:
        """Whether text[index] directly follows a kept character of a spaced script (no separator):
        then a word starting at `index` would start mid-word."""
        return index > 0 and self.gap[index] == GAP_NONE and is_spaced(self.text[index - 1])

    def joined_after(self, end: int) -> bool:
        """Whether text[end] (the character after a match) continues the word, in a spaced script."""
        return end < len(self.text) and self.gap[end] == GAP_NONE and is_spaced(self.text[end])


def normalise(text: str) -> Normalised:
    kept: list[str] = []
    origin: list[int] = []
    gaps: list[int] = []
    pending = GAP_NONE
    for index, char in enumerate(text):
        for folded, kind in fold(char):
            if kind == _KEPT:
                kept.append(folded)
                origin.append(index)
                gaps.append(pending)
                pending = GAP_NONE
            elif kind != _TRANSPARENT:
                pending = max(pending, kind)
    return Normalised("".join(kept), tuple(origin), tuple(gaps), pending)


def normalise_word(word: str) -> tuple[str, frozenset[int]]:
    """A listed word's key and the positions in it where the word itself has separators
    ("crystal meth": key "crystalmeth", gap at 7)."""
    norm = normalise(word)
    return norm.text, frozenset(i for i in range(1, len(norm.text)) if norm.gap[i] != GAP_NONE)
