"""FolderTokenizer against transformers' AutoTokenizer on the same folders: the same ids, text and chats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateError
from transformers import AutoTokenizer

from tokenyard.engine.folder_tokenizer import FolderTokenizer
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.models import ResolvedModel
from tokenyard.protocol.internal import ChatMessage, FunctionTool

TEXTS = [
    "Hello world",
    "  leading spaces, trailing  \n\n",
    "Digits 1234567890 and 3.14159, dates 2026-12-01",
    "你好，世界！ Emoji: 🙂 🚀 and mixed 中文 English text.",
    "Special tokens in text: <|im_start|>user\nhi<|im_end|> <|endoftext|>",
    "tabs\tand\r\nwindows lines; code: def f(x): return x**2  # ok",
    "",
]
CHATS = [
    [ChatMessage(role="user", content="What is the capital of France?")],
    [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="你好, what is 2+2?"),
        ChatMessage(role="assistant", content="4"),
        ChatMessage(role="user", content="And 3+3?", name="bob"),
    ],
]
TOOLS = [FunctionTool(name="weather", description="Weather in a city", parameters={"type": "object", "properties": {}})]


def folders(request: pytest.FixtureRequest) -> list[Path]:
    chat: Path = request.getfixturevalue("tiny_chat_model_dir")
    model: ResolvedModel = request.getfixturevalue("default_chat_model")
    return [chat, model.path]


@pytest.fixture(params=["tiny-chat", "smollm2"])
def folder(request: pytest.FixtureRequest) -> Path:
    return folders(request)[0 if request.param == "tiny-chat" else 1]


def test_the_generic_class_loads_without_transformers(folder: Path) -> None:
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    assert FolderTokenizer.load(folder) is not None


def test_ids_text_and_special_tokens_equal_transformers(folder: Path) -> None:
    ours, theirs = FolderTokenizer.load(folder), AutoTokenizer.from_pretrained(folder)
    assert ours is not None
    for text in TEXTS:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special)
            assert ids == theirs.encode(text, add_special_tokens=special)
            assert (
                ours(text, add_special_tokens=special)["input_ids"]
                == theirs(text, add_special_tokens=special)["input_ids"]
            )
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
            assert [ours.convert_ids_to_tokens(i) for i in ids] == theirs.convert_ids_to_tokens(ids)
    assert set(ours.all_special_ids) == set(theirs.all_special_ids)
    assert ours.eos_token_id == theirs.eos_token_id
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.chat_template == theirs.chat_template


def test_chats_render_and_encode_as_transformers_does(folder: Path) -> None:
    ours, theirs = HFPromptTokenizer.from_folder(folder), HFPromptTokenizer(AutoTokenizer.from_pretrained(folder))
    assert isinstance(ours.hf_tokenizer, FolderTokenizer)
    for chat in CHATS:
        assert ours.encode_chat(chat) == theirs.encode_chat(chat)
        assert ours.encode_chat(chat, TOOLS) == theirs.encode_chat(chat, TOOLS)
    for text in TEXTS:
        assert ours.encode_text(text) == theirs.encode_text(text)
        ids = ours.encode_text(text)
        assert ours.decode(ids) == theirs.decode(ids)
        assert [ours.token_bytes(i) for i in ids] == [theirs.token_bytes(i) for i in ids]


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}{% if m.name %} ({{ m.name }}){% endif %}\n"
        "{% endfor %}{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}"
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
        "{{ bos_token }}{% generation %}{{ eos_token }}{% endgeneration %}"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ dict(a=1) | tojson }}{% endfor %}",
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}",
    ],
)
def test_template_features_match(template: str, tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_chat_model_dir, folder)
    (folder / "chat_template.jinja").write_text(template)
    ours, theirs = FolderTokenizer.load(folder), AutoTokenizer.from_pretrained(folder)
    assert ours is not None
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "hi", "name": "alice", "tool_calls": None},
        {"role": "assistant", "content": "yo"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]

    def render(tokenizer: Any) -> Any:
        try:
            return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        except TemplateError as exc:
            return str(exc)

    assert render(ours) == render(theirs)


def test_folders_transformers_would_change_fall_back(tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_chat_model_dir, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    for change in ({"add_bos_token": True}, {"tokenizer_class": "LlamaTokenizer"}, {"extra_special_tokens": ["<x>"]}):
        config_file.write_text(json.dumps({**config, **change}))
        assert FolderTokenizer.load(folder) is None
        assert not isinstance(HFPromptTokenizer.from_folder(folder).hf_tokenizer, FolderTokenizer)
