"""Incremental detokenisation never emits a broken character; stop strings are never half-emitted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer

from tokenyard.engine.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer, StopStringMatcher
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.models import ResolvedModel
from tokenyard.protocol.internal import ChatMessage

MIXED_TEXT = "你好，世界！今天🙂🚀 北京 ✨ hello 中文 English"
CHAT = [ChatMessage(role="user", content="Say hello in Chinese.")]


def byte_decode(ids: Sequence[int]) -> str:
    """A byte-level 'tokenizer' where every token is one byte: the harshest case for streaming."""
    return bytes(ids).decode("utf-8", errors="replace")


def stream(detokenizer: IncrementalDetokenizer, ids: Sequence[int]) -> list[str]:
    return [detokenizer.add([token]) for token in ids]


def test_multibyte_character_is_held_until_its_last_byte_arrives() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode)
    assert stream(detokenizer, list("中".encode())) == ["", "", "中"]
    assert stream(detokenizer, list("🙂".encode())) == ["", "", "", "🙂"]


def test_byte_stream_of_chinese_and_emoji_reassembles_exactly() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode)
    chunks = stream(detokenizer, list(MIXED_TEXT.encode()))
    assert "".join(chunks) + detokenizer.flush() == MIXED_TEXT
    assert not any(REPLACEMENT_CHAR in chunk for chunk in chunks)


def test_real_bpe_tokens_split_inside_characters_stream_cleanly(tiny_chat_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    ids = tokenizer.encode(MIXED_TEXT, add_special_tokens=False)
    # The test is only meaningful if some tokens hold part of a character on their own.
    assert any(REPLACEMENT_CHAR in tokenizer.decode([token]) for token in ids)

    def decode(token_ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(token_ids), skip_special_tokens=True))

    detokenizer = IncrementalDetokenizer(decode, prompt_token_ids=tokenizer.encode("前文", add_special_tokens=False))
    chunks = stream(detokenizer, ids)
    assert "".join(chunks) + detokenizer.flush() == MIXED_TEXT
    assert not any(REPLACEMENT_CHAR in chunk for chunk in chunks)


def test_flush_returns_an_unfinished_character_as_replacement() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode)
    assert stream(detokenizer, list("a中".encode())[:2]) == ["a", ""]
    assert detokenizer.flush() == REPLACEMENT_CHAR
    assert detokenizer.flush() == ""


def test_prompt_context_is_not_repeated_in_the_output() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode, prompt_token_ids=list(b"the prompt "))
    assert "".join(stream(detokenizer, list(b"answer"))) == "answer"


def test_stop_string_split_across_chunks_is_held_back_and_removed() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("Hello ST") == "Hello "
    assert matcher.feed("O") == ""
    assert matcher.feed("P and more") == ""
    assert matcher.stopped
    assert matcher.flush() == ""
    assert matcher.feed("after") == ""


def test_held_tail_is_released_when_it_stops_matching() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("a S") == "a "
    assert matcher.feed("T") == ""
    assert matcher.feed("x") == "STx"
    assert not matcher.stopped


def test_held_tail_is_released_when_generation_ends_otherwise() -> None:
    matcher = StopStringMatcher(["</answer>"])
    assert matcher.feed("42 </ans") == "42 "
    assert matcher.flush() == "</ans"


def test_earliest_of_several_stop_strings_wins() -> None:
    matcher = StopStringMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.stopped


def test_no_stop_strings_passes_everything_through() -> None:
    matcher = StopStringMatcher([])
    assert matcher.feed("anything at all") == "anything at all"
    assert matcher.flush() == ""


def test_chinese_stop_string_through_byte_level_stream() -> None:
    detokenizer, matcher = IncrementalDetokenizer(byte_decode), StopStringMatcher(["世界"])
    emitted = []
    for token in "你好，世界！".encode():
        emitted.append(matcher.feed(detokenizer.add([token])))
        if matcher.stopped:
            break
    assert "".join(emitted) == "你好，"
    assert matcher.stopped


def test_default_chat_models_tokenizer_streams_chinese_and_emoji(default_chat_model: ResolvedModel) -> None:
    tokenizer = HFPromptTokenizer.from_folder(default_chat_model.path)
    ids = tokenizer.encode_text(MIXED_TEXT)
    assert any(REPLACEMENT_CHAR in tokenizer.decode([token]) for token in ids)  # some tokens cut characters
    detokenizer = IncrementalDetokenizer(tokenizer.decode, tokenizer.encode_chat(CHAT))
    chunks = stream(detokenizer, ids)
    assert "".join(chunks) + detokenizer.flush() == MIXED_TEXT
    assert not any(REPLACEMENT_CHAR in chunk for chunk in chunks)
