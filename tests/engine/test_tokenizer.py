"""HFPromptTokenizer: the model's own chat template, plain-text prompts, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.internal import ChatMessage

MESSAGES = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="你好, what is 2+2?"),
]


@pytest.fixture
def tokenizer(tiny_chat_model_dir: Path) -> HFPromptTokenizer:
    return HFPromptTokenizer.from_folder(tiny_chat_model_dir)


def test_encode_chat_renders_the_models_chatml_template(tokenizer: HFPromptTokenizer) -> None:
    ids = tokenizer.encode_chat(MESSAGES)
    rendered = tokenizer.hf_tokenizer.decode(ids)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n你好, what is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert all(isinstance(token, int) for token in ids)


def test_special_tokens_in_the_template_are_single_tokens(tokenizer: HFPromptTokenizer) -> None:
    ids = tokenizer.encode_chat(MESSAGES)
    im_start = tokenizer.hf_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == im_start
    assert ids.count(im_start) == 3


def test_name_is_passed_to_templates_that_use_it(tiny_chat_model_dir: Path) -> None:
    hf = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    hf.chat_template = (
        "{% for m in messages %}{{ m['role'] }}{% if m.name %}({{ m.name }}){% endif %}"
        ": {{ m['content'] }}\n{% endfor %}"
    )
    tokenizer = HFPromptTokenizer(hf)
    named = [ChatMessage(role="user", content="hi", name="alice"), ChatMessage(role="user", content="yo")]
    assert hf.decode(tokenizer.encode_chat(named)) == "user(alice): hi\nuser: yo\n"


def test_model_without_chat_template_is_a_400(tiny_chat_model_dir: Path) -> None:
    hf = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    hf.chat_template = None
    with pytest.raises(InvalidRequestError, match="no chat template") as raised:
        HFPromptTokenizer(hf).encode_chat(MESSAGES)
    assert raised.value.status_code == 400


def test_empty_conversation_is_a_400(tokenizer: HFPromptTokenizer) -> None:
    with pytest.raises(InvalidRequestError, match="at least one message"):
        tokenizer.encode_chat([])


def test_template_that_rejects_the_messages_is_a_400(tiny_chat_model_dir: Path) -> None:
    hf = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    hf.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(InvalidRequestError, match="roles must alternate") as raised:
        HFPromptTokenizer(hf).encode_chat(MESSAGES)
    assert raised.value.param == "messages"


def test_encode_text_adds_only_what_the_tokenizer_adds_by_default(tokenizer: HFPromptTokenizer) -> None:
    text = "Hello world, 北京🙂"
    ids = tokenizer.encode_text(text)
    # This ChatML tokenizer (like SmolLM2's) adds no BOS to a plain prompt.
    assert ids == tokenizer.hf_tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_encode_text_keeps_the_special_tokens_a_tokenizer_adds_by_default(tiny_embedding_model_dir: Path) -> None:
    tokenizer = HFPromptTokenizer.from_folder(tiny_embedding_model_dir)  # BERT-style: [CLS] ... [SEP]
    ids = tokenizer.encode_text("hello world")
    assert tokenizer.hf_tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]


def test_decode_skips_special_tokens_and_eos_ids(tokenizer: HFPromptTokenizer) -> None:
    assert tokenizer.decode(tokenizer.encode_chat(MESSAGES)).startswith("system\nBe brief.\n")
    assert tokenizer.eos_token_ids() == {tokenizer.hf_tokenizer.convert_tokens_to_ids("<|im_end|>")}


@pytest.mark.parametrize("text", ["你好，世界！", "Emoji: 🙂 🚀 and mixed 中文 English text."])
def test_token_bytes_rebuild_text_split_inside_characters(tokenizer: HFPromptTokenizer, text: str) -> None:
    ids = tokenizer.encode_text(text)
    assert any(tokenizer.decode([token]).endswith("\ufffd") for token in ids)  # some tokens cut a character
    assert b"".join(tokenizer.token_bytes(token) for token in ids).decode() == text


def test_token_bytes_of_a_special_token_are_its_text(tokenizer: HFPromptTokenizer) -> None:
    im_end = tokenizer.hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.token_bytes(im_end) == b"<|im_end|>"


class SentencePieceLike:
    """What HFPromptTokenizer reads of a SentencePiece vocabulary with byte fallback."""

    all_special_ids = (0,)

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return ("<s>", "<0xE4>", "\u2581the", "é")[token_id]


def test_token_bytes_of_sentencepiece_pieces() -> None:
    tokenizer = HFPromptTokenizer(SentencePieceLike())
    assert [tokenizer.token_bytes(i) for i in range(4)] == [b"<s>", b"\xe4", b" the", "é".encode()]
