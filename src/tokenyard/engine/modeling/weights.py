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
    """Copy HF-named tensors into `model` (whose parameters have the target dtype and device).

    One tensor (or one layer's fused Q/K/V or gate/up) at a time, converted by the copy itself: fusing
    every layer first held a float32 copy of most of the model at once (~280 MB more at load for SmolLM2).
    """
    params = dict(model.named_parameters())
    loaded: set[str] = set()

    def put(name: str, tensor: torch.Tensor) -> None:
        param = params.get(name.removeprefix("model."))
        if param is not None:  # extra tensors (say, rotary inv_freq buffers) are ignored
            with torch.no_grad():
                param.copy_(tensor)  # rounds to the parameter's dtype, as .to() would, without a copy
            loaded.add(name.removeprefix("model."))

    fused_parts: set[str] = set()
    for i in range(model.spec.num_layers):
        attn, mlp = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        for suffix in ("weight", "bias"):
            names = [f"{attn}{name}_proj.{suffix}" for name in "qkv"]
            if all(name in tensors for name in names):
                put(f"{attn}qkv_proj.{suffix}", torch.cat([tensors[name] for name in names]))
                fused_parts.update(names)
        names = [f"{mlp}gate_proj.weight", f"{mlp}up_proj.weight"]
        if all(name in tensors for name in names):
            put(f"{mlp}gate_up_proj.weight", torch.cat([tensors[name] for name in names]))
            fused_parts.update(names)
    for name, tensor in tensors.items():
        if name not in fused_parts:
            put(name, tensor)
    if "lm_head.weight" not in tensors or model.spec.tie_word_embeddings:
        put("lm_head.weight", tensors["model.embed_tokens.weight"])
    missing = set(params) - loaded
    if missing:
        raise ModelLoadError(f"the checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}; re-download it")
