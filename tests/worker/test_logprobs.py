"""Engine logprobs to wire entries: token text, raw bytes, no -inf, and the prompt's first token."""

from __future__ import annotations

from collections.abc import Sequence

from tokenyard.engine.base import TokenLogprob
from tokenyard.worker.logprobs import generated_logprobs, prompt_logprobs, token_text

PIECES = {1: b"\xe5\x8c", 2: b"\x97", 3: b" the"}


class PieceTokenizer:
    def encode_chat(self, messages: object) -> list[int]:
        return []

    def encode_text(self, text: str) -> list[int]:
        return []

    def decode(self, token_ids: Sequence[int]) -> str:
        return b"".join(PIECES[t] for t in token_ids).decode(errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return PIECES[token_id]


def test_token_text_escapes_a_piece_of_a_character() -> None:
    assert token_text(b" the") == " the"
    assert token_text("北".encode()) == "北"
    assert token_text(b"\xe5\x8c") == "\\xe5\\x8c"


def test_generated_entries_carry_bytes_and_alternatives() -> None:
    entries = generated_logprobs(PieceTokenizer(), [TokenLogprob(1, -0.5, ((1, -0.5), (3, float("-inf"))))])
    assert entries[0].bytes == [0xE5, 0x8C] and entries[0].token == "\\xe5\\x8c"
    assert [(top.token, top.logprob) for top in entries[0].top_logprobs] == [("\\xe5\\x8c", -0.5), (" the", -9999.0)]


def test_prompt_entries_start_with_a_token_nothing_predicts() -> None:
    entries = prompt_logprobs(PieceTokenizer(), [3, 1, 2], [None, TokenLogprob(1, -1.0), TokenLogprob(2, -0.1)])
    assert [e.logprob for e in entries] == [None, -1.0, -0.1]
    assert bytes(b for e in entries for b in e.bytes).decode() == " the北"
