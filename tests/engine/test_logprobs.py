"""LogprobHoldback: a token's logprob leaves with its text, and a stop string drops the tokens inside it."""

from __future__ import annotations

from tokenyard.engine.base import TokenLogprob
from tokenyard.engine.logprobs import LogprobHoldback


def lp(token: int) -> TokenLogprob:
    return TokenLogprob(token_id=token, logprob=-float(token))


def ids(released: list[TokenLogprob]) -> list[int]:
    return [entry.token_id for entry in released]


def test_a_token_whose_text_streams_at_once_is_released_at_once() -> None:
    holdback = LogprobHoldback()
    holdback.add(lp(1))
    assert ids(holdback.advance("ab", held_back=0)) == [1]


def test_bytes_of_a_cut_character_wait_for_the_token_that_completes_it() -> None:
    holdback = LogprobHoldback()
    holdback.add(lp(1))
    assert holdback.advance("", held_back=0) == []  # half a character: nothing decoded yet
    holdback.add(lp(2))
    assert ids(holdback.advance("北", held_back=0)) == [1, 2]


def test_text_held_for_a_possible_stop_string_holds_its_token() -> None:
    holdback = LogprobHoldback()
    holdback.add(lp(1))
    assert holdback.advance("", held_back=2) == []  # "ab" might start the stop string "abc"
    holdback.add(lp(2))
    assert ids(holdback.advance("abx", held_back=0)) == [1, 2]


def test_a_stop_string_keeps_tokens_that_began_before_it() -> None:
    holdback = LogprobHoldback()
    holdback.add(lp(1))
    assert ids(holdback.advance("he", held_back=0)) == [1]
    holdback.add(lp(2))  # "llo " partly before the stop string "o w"
    assert holdback.advance("ll", held_back=2) == []
    holdback.add(lp(3))  # "wor": inside the stop string
    assert ids(holdback.finish("", stopping_token=False, cut_at_stop_string=True)) == [2]


def test_a_stopping_token_has_no_text_and_no_logprob() -> None:
    holdback = LogprobHoldback()
    holdback.add(lp(1))
    assert holdback.advance("", held_back=0) == []
    holdback.add(lp(2))  # EOS, after a token still held back (a cut character flushed at the end)
    assert ids(holdback.finish("\ufffd", stopping_token=True, cut_at_stop_string=False)) == [1]


def test_running_out_of_tokens_releases_everything() -> None:
    holdback = LogprobHoldback()
    holdback.add(lp(1))
    holdback.advance("", held_back=3)
    holdback.add(lp(2))
    assert ids(holdback.finish("abcd", stopping_token=False, cut_at_stop_string=False)) == [1, 2]
