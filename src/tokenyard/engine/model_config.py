"""A chat model's config.json and generation_config.json, read without transformers where the engine can.

transformers' `AutoConfig` and `GenerationConfig` cost a worker 81 MiB of resident memory for two
small JSON files (they import `torch.distributed.tensor` and sympy; docs/engine.md, "Sizing
memory"). For the llama family, which runs on the engine's own code, `read_model_config` reads
config.json itself and fills what the file omits the way transformers' `LlamaConfig`,
`MistralConfig` and `Qwen2Config` do, for the fields the engine reads (`LlamaSpec`, the context
length, the sliding window, the EOS ids); tests compare the two readers on the same files. Any
other architecture runs through transformers' fallback, which needs transformers anyway: it gets
transformers' own config.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tokenyard.errors import ModelLoadError
from tokenyard.models.folder import read_json_object

_DEFAULT_ROPE_THETA = 10000.0
_SCALED_ROPE_TYPES = ("llama3", "yarn", "longrope")  # transformers adds their pre-training length
# What transformers' config class for each family assumes for a field config.json leaves out; a head
# dimension or KV head count that is missing or null is derived below, as the classes derive it.
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": None,
        "head_dim": None,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "eos_token_id": 2,
    },
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": None,
        "max_position_embeddings": 4096 * 32,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "sliding_window": 4096,
        "eos_token_id": 2,
    },
    "qwen2": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": None,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "eos_token_id": None,
    },
}


def read_model_config(folder: Path) -> Any:
    """The model's config: attributes as transformers' config object has them for the fields the
    engine reads (the llama family, without importing transformers), else transformers' own."""
    raw = read_json_object(folder / "config.json")
    defaults = _FAMILY_DEFAULTS.get(str(raw.get("model_type")))
    if defaults is None:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(folder)
    return _family_config(raw, defaults)


def _family_config(raw: dict[str, Any], defaults: dict[str, Any]) -> SimpleNamespace:
    fields = {**defaults, **{key: value for key, value in raw.items() if key != "rope_scaling"}}
    heads = fields["num_attention_heads"]
    if raw.get("model_type") == "llama" and fields["hidden_size"] % heads:  # LlamaConfig refuses it too
        raise ModelLoadError(
            f"config.json: the hidden size ({fields['hidden_size']}) is not a multiple of the number of "
            f"attention heads ({heads}); re-download the model"
        )
    fields["head_dim"] = fields["head_dim"] or fields["hidden_size"] // heads
    fields["num_key_value_heads"] = fields["num_key_value_heads"] or heads
    if "use_sliding_window" in defaults and not fields["use_sliding_window"]:
        fields["sliding_window"] = None  # Qwen2 keeps a window only when it uses one
    fields["rope_parameters"] = _rope_parameters(raw, fields["max_position_embeddings"])
    return SimpleNamespace(**fields)


def _rope_parameters(raw: dict[str, Any], max_positions: int) -> dict[str, Any]:
    """One flat dict of rotary settings, as transformers 5 standardises `rope_scaling` and `rope_theta`."""
    params = dict(raw.get("rope_scaling") or raw.get("rope_parameters") or {})
    params.setdefault("rope_theta", raw.get("rope_theta", _DEFAULT_ROPE_THETA))
    params.setdefault("rope_type", params.get("type", "default"))
    if params["rope_type"] in _SCALED_ROPE_TYPES:
        if "original_max_position_embeddings" in raw:
            params["original_max_position_embeddings"] = raw["original_max_position_embeddings"]
        params.setdefault("original_max_position_embeddings", max_positions)
    return params


def generation_eos_ids(folder: Path) -> set[int]:
    """The EOS ids generation_config.json names (none without the file)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return set()
    value = read_json_object(path).get("eos_token_id")
    return {value} if isinstance(value, int) else {int(token) for token in value or []}
