"""Small builders for the word filter's tests."""

from __future__ import annotations

from tokenyard.governance.textnorm import normalise, normalise_word
from tokenyard.governance.wordfilter import Matcher
from tokenyard.governance.wordlists import Rule


def rules(words: list[str], list_name: str = "words", *, allow: bool = False) -> list[Rule]:
    """Rules as a list file would give them, the first word on line 1."""
    made = []
    for line, word in enumerate(words, start=1):
        key, gaps = normalise_word(word)
        made.append(Rule(f"{list_name}:{line}", list_name, word, key, gaps, allow))
    return made


def matcher(words: list[str], allowed: tuple[str, ...] = ()) -> Matcher:
    return Matcher(rules(words) + rules(list(allowed), "allow", allow=True))


def found(m: Matcher, text: str) -> list[str]:
    """The listed words hit in `text`, as written in their list."""
    return [hit.rule.word for hit in m.hits(normalise(text))]
