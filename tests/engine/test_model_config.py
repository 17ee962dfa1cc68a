"""read_model_config: the llama family's config.json read as transformers reads it, without transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoConfig, GenerationConfig

from tokenyard.engine.loader import _config_eos_ids, _context_length
from tokenyard.engine.model_config import generation_eos_ids, read_model_config
from tokenyard.engine.modeling.llama import LlamaSpec
from tokenyard.errors import ModelLoadError

SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "eos_token_id": 2,
    "head_dim": 64,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    "tie_word_embeddings": True,
    "vocab_size": 49152,
}
LLAMA31_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "rope_type": "llama3"}
CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2": SMOLLM2,
    # transformers 4's layout: theta beside the scaling, which names its kind `type`
    "llama-old-rope": {"model_type": "llama", "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}},
    "llama3.1": {
        "model_type": "llama",
        "rope_theta": 500000.0,
        "rope_scaling": {**LLAMA31_SCALING, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072,
        "eos_token_id": [128001, 128008, 128009],
    },
    "llama3-no-original-length": {"model_type": "llama", "rope_scaling": LLAMA31_SCALING},
    "llama-nulls": {"model_type": "llama", "num_key_value_heads": None, "head_dim": None, "eos_token_id": None},
    "llama-bare": {"model_type": "llama"},  # every field from LlamaConfig's defaults
    "mistral-bare": {"model_type": "mistral"},  # a 4,096-token sliding window by default
    "mistral-no-window": {"model_type": "mistral", "sliding_window": None, "head_dim": 128, "hidden_size": 5120},
    "qwen2-bare": {"model_type": "qwen2"},
    "qwen2-window-unused": {"model_type": "qwen2", "use_sliding_window": False, "sliding_window": 1024},
    "qwen2-window-used": {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 1024},
}


def _write(folder: Path, config: dict[str, Any], generation: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_engine_reads_what_transformers_reads(tmp_path: Path, name: str) -> None:
    folder = _write(tmp_path, CONFIGS[name])
    ours, theirs = read_model_config(folder), AutoConfig.from_pretrained(folder)
    assert LlamaSpec.supports(ours) and LlamaSpec.supports(theirs)
    assert LlamaSpec.from_config(ours) == LlamaSpec.from_config(theirs)
    assert _context_length(ours, None) == _context_length(theirs, None)
    assert _config_eos_ids(ours) == _config_eos_ids(theirs)


@pytest.mark.parametrize("eos", [7, [7, 9], None])
def test_generation_config_eos_ids_match_transformers(tmp_path: Path, eos: Any) -> None:
    folder = _write(tmp_path, SMOLLM2, {"bos_token_id": 1, "eos_token_id": eos})
    expected = GenerationConfig.from_pretrained(folder).eos_token_id
    assert generation_eos_ids(folder) == ({expected} if isinstance(expected, int) else set(expected or []))
    assert generation_eos_ids(_write(tmp_path / "without", SMOLLM2)) == set()


def test_other_architectures_get_transformers_config(tmp_path: Path) -> None:
    config = {"model_type": "gpt2", "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2}
    read = read_model_config(_write(tmp_path, config))
    assert type(read).__name__ == "GPT2Config"
    assert not LlamaSpec.supports(read)


def test_unreadable_and_invalid_configs_are_one_line_load_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"cannot read .*config\.json"):
        read_model_config(tmp_path)
    odd = _write(tmp_path / "odd", {"model_type": "llama", "hidden_size": 60, "num_attention_heads": 7})
    with pytest.raises(ModelLoadError, match=r"hidden size \(60\) is not a multiple"):
        read_model_config(odd)


def test_reading_a_llama_config_does_not_import_transformers(tmp_path: Path) -> None:
    folder = _write(tmp_path, SMOLLM2, {"eos_token_id": 2})
    code = (
        "import sys; from pathlib import Path; from tokenyard.engine import model_config as m; "
        f"m.read_model_config(Path({str(folder)!r})); m.generation_eos_ids(Path({str(folder)!r})); "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
