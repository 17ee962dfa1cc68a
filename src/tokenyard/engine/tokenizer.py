"""Prompt tokenisation with the model's own files: its chat template and its tokenizer.

`HFPromptTokenizer` implements `engine.base.PromptTokenizer` around a Hugging Face tokenizer. Chat
messages are rendered by the template shipped with the model (never a hand-written registry of
templates, FastChat's old habit), so a new model brings its own prompt format.

Plain text (`/v1/completions`) is encoded the way vLLM and `transformers` encode a prompt by default:
with `add_special_tokens=True`, so the tokenizer adds exactly what the model expects at the start of a
prompt (a BOS token for Llama-2/3 style tokenizers, nothing for GPT-2/SmolLM style ones) and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.internal import ChatMessage


class HFPromptTokenizer:
    """Chat messages or text to token ids, plus the ids that end a generation."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf_tokenizer = tokenizer

    @classmethod
    def from_folder(cls, folder: Path) -> HFPromptTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(folder))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf_tokenizer, "chat_template", None))

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Render `messages` with the model's chat template, ending with the assistant's turn prefix."""
        if not self.has_chat_template:
            raise InvalidRequestError(
                "this model has no chat template; use /v1/completions with a plain prompt instead",
                param="messages",
            )
        if not messages:
            raise InvalidRequestError("messages must contain at least one message", param="messages")
        from jinja2 import TemplateError

        try:
            encoded = self.hf_tokenizer.apply_chat_template(
                [_message_dict(message) for message in messages],
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

    def eos_token_ids(self) -> set[int]:
        eos = getattr(self.hf_tokenizer, "eos_token_id", None)
        return {int(eos)} if eos is not None else set()


def _message_dict(message: ChatMessage) -> dict[str, str]:
    entry = {"role": message.role, "content": message.content}
    if message.name is not None:  # templates that support `name` test for the key, not its value
        entry["name"] = message.name
    return entry


def _as_id_list(ids: Sequence[int]) -> list[int]:
    """Plain Python ints (tokenizers may hand back numpy or tensor scalars)."""
    return [int(token) for token in ids]
