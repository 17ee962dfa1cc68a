"""Prompt tokenisation with the model's own files: its chat template and its tokenizer.

`HFPromptTokenizer` implements `engine.base.PromptTokenizer` around a Hugging Face tokenizer: the folder's
tokenizer.json through the `tokenizers` library where that is exact (`engine.folder_tokenizer`), else
transformers' AutoTokenizer. Chat
messages are rendered by the template shipped with the model (never a hand-written registry of
templates, FastChat's old habit), so a new model brings its own prompt format.

Plain text (`/v1/completions`) is encoded the way vLLM and `transformers` encode a prompt by default:
with `add_special_tokens=True`, so the tokenizer adds exactly what the model expects at the start of a
prompt (a BOS token for Llama-2/3 style tokenizers, nothing for GPT-2/SmolLM style ones) and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenyard.engine.folder_tokenizer import FolderTokenizer
from tokenyard.engine.tool_prompt import template_messages, template_supports_tools
from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.internal import ChatMessage, FunctionTool


class HFPromptTokenizer:
    """Chat messages or text to token ids, plus the ids that end a generation."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf_tokenizer = tokenizer
        self._special_ids = set(getattr(tokenizer, "all_special_ids", ()))
        self._byte_level: bool | None = None  # found on first use: reading the vocabulary takes a while
        self._bytes_cache: dict[int, bytes] = {}

    @classmethod
    def from_folder(cls, folder: Path) -> HFPromptTokenizer:
        """With the `tokenizers` library alone where that gives transformers' results (engine.folder_tokenizer),
        else with transformers' AutoTokenizer."""
        files = FolderTokenizer.load(folder)
        if files is not None:
            return cls(files)
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(folder))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf_tokenizer, "chat_template", None))

    def encode_chat(self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool] | None = None) -> list[int]:
        """Render `messages` (and `tools`, see `engine.tool_prompt`) with the model's chat template,
        ending with the assistant's turn prefix."""
        if not self.has_chat_template:
            raise InvalidRequestError(
                "this model has no chat template; use /v1/completions with a plain prompt instead",
                param="messages",
            )
        if not messages:
            raise InvalidRequestError("messages must contain at least one message", param="messages")
        from jinja2 import TemplateError

        native = template_supports_tools(self.hf_tokenizer.chat_template)
        rendered, template_tools = template_messages(messages, tools, native=native)
        try:
            encoded = self.hf_tokenizer.apply_chat_template(
                rendered,
                tools=template_tools,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,  # a BatchEncoding in transformers 4 and 5 alike
            )
        except TemplateError as exc:  # templates reject e.g. roles that do not alternate
            raise InvalidRequestError(
                f"the model's chat template rejected the messages: {exc}", param="messages"
            ) from exc
        return _as_id_list(encoded["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the tokenizer adds by default."""
        return _as_id_list(self.hf_tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids` without special tokens; bytes of a cut character show as U+FFFD."""
        return str(self.hf_tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for, as OpenAI's logprobs `bytes` report them.

        Decoding a lone token cannot give them: a piece of a multi-byte character decodes to U+FFFD.
        So the token's vocabulary entry is read instead: `<0xE4>` byte-fallback pieces (SentencePiece),
        byte-level BPE symbols mapped back to their bytes (GPT-2 style), or the piece's own text.
        """
        cached = self._bytes_cache.get(token_id)
        if cached is None:
            cached = self._bytes_cache[token_id] = self._token_bytes(token_id)
        return cached

    def _token_bytes(self, token_id: int) -> bytes:
        piece = str(self.hf_tokenizer.convert_ids_to_tokens(token_id))
        if token_id in self._special_ids:
            return piece.encode()
        if match := _BYTE_FALLBACK.fullmatch(piece):
            return bytes([int(match[1], 16)])
        if self._byte_level is None:
            self._byte_level = _is_byte_level(self.hf_tokenizer)
        if self._byte_level and all(char in _BYTE_DECODER for char in piece):
            return bytes(_BYTE_DECODER[char] for char in piece)
        return piece.replace("\u2581", " ").encode()  # SentencePiece's word-boundary mark is a space

    def eos_token_ids(self) -> set[int]:
        eos = getattr(self.hf_tokenizer, "eos_token_id", None)
        return {int(eos)} if eos is not None else set()


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which byte-level BPE vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {b: chr(b) for b in printable}, 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


_BYTE_DECODER = {char: byte for byte, char in _byte_to_unicode().items()}


def _is_byte_level(tokenizer: Any) -> bool:
    """True when the tokenizer's decoder is byte-level BPE (its pieces are GPT-2's byte characters)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("decoder"))


def _as_id_list(ids: Sequence[int]) -> list[int]:
    """Plain Python ints (tokenizers may hand back numpy or tensor scalars)."""
    return [int(token) for token in ids]
