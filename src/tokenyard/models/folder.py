"""What a Hugging Face model folder says about itself: a chat or an embedding model, and its context length."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenyard.errors import ModelLoadError
from tokenyard.protocol.internal import ModelKind

# Files whose presence marks a sentence-transformers (embedding) folder.
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")


def detect_kind(folder: Path) -> ModelKind:
    """EMBED for sentence-transformers folders and encoders, GENERATE for causal language models."""
    if any((folder / name).is_file() for name in _SENTENCE_TRANSFORMERS_FILES):
        return ModelKind.EMBED
    config = read_json_object(folder / "config.json")
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        return ModelKind.GENERATE  # old configs omit it; the causal-LM loader then says what is wrong
    # GPT-2 style checkpoints name their causal head `*LMHeadModel`.
    is_causal = any(str(arch).endswith(("ForCausalLM", "LMHeadModel")) for arch in architectures)
    return ModelKind.GENERATE if is_causal else ModelKind.EMBED


def model_context_length(config: Any) -> int:
    """The longest sequence the model was built for, from whichever field its family uses."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelLoadError("the model's config.json states no context length; pass --context-length N")


def check_context_setting(requested: int | None, limit: int) -> None:
    """Refuse a `--context-length` longer than the model can attend to (None: the flag is unset)."""
    if requested is not None and requested > limit:
        raise ModelLoadError(f"--context-length {requested} exceeds the model's maximum of {limit} tokens")


def read_json_object(path: Path) -> dict[str, Any]:
    """A model file that must be a JSON object (config.json, generation_config.json); ModelLoadError otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; re-download the model".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object; re-download the model")
    return data
