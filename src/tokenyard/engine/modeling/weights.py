"""Load a Hugging Face safetensors folder into `LlamaModel`, fusing Q/K/V and gate/up projections.

Reads `model.safetensors` or the shards listed in `model.safetensors.index.json` (what `resolve_model`
produces, GGUF files included once converted). Names follow transformers' Llama/Mistral/Qwen2 layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tokenyard.engine.modeling.llama import LlamaModel
from tokenyard.errors import ModelLoadError


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the folder's safetensors file(s), on the CPU."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if not index.is_file():
        raise ModelLoadError(f"{folder} holds no model.safetensors; re-download or re-convert the model")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_file(folder / shard))
    return tensors


def load_llama_weights(model: LlamaModel, tensors: dict[str, torch.Tensor]) -> None:
    """Copy HF-named tensors into `model` (whose parameters have the target dtype and device)."""
    fused = dict(tensors)
    for i in range(model.spec.num_layers):
        attn, mlp = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        for suffix in ("weight", "bias"):
            parts = [fused.pop(f"{attn}{name}_proj.{suffix}", None) for name in "qkv"]
            if all(part is not None for part in parts):
                fused[f"{attn}qkv_proj.{suffix}"] = torch.cat(parts)
        fused[f"{mlp}gate_up_proj.weight"] = torch.cat(
            [fused.pop(f"{mlp}gate_proj.weight"), fused.pop(f"{mlp}up_proj.weight")]
        )
    if "lm_head.weight" not in fused or model.spec.tie_word_embeddings:
        fused["lm_head.weight"] = fused["model.embed_tokens.weight"]
    state = {name.removeprefix("model."): tensor for name, tensor in fused.items()}
    missing = _copy_into(model, state)  # extra tensors (say, rotary inv_freq buffers) are ignored
    if missing:
        raise ModelLoadError(f"the checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}; re-download it")


def _copy_into(model: LlamaModel, state: dict[str, torch.Tensor]) -> set[str]:
    """Copy what matches; return the names of parameters the state lacks."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if name in state:
                param.copy_(state[name].to(param.dtype))
    return set(params) - set(state)
