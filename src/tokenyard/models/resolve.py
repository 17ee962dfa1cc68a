"""`--model SPEC` to a `ResolvedModel`: an alias, a local folder, a local `.gguf` file or a hub id, in that order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenyard.errors import ModelLoadError
from tokenyard.models.aliases import ALIASES, alias_source
from tokenyard.models.folder import detect_kind
from tokenyard.models.gguf_conversion import convert_gguf, gguf_folder_name
from tokenyard.models.hub import download_from_hub, looks_like_hub_id
from tokenyard.protocol.internal import ModelKind


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its default alias, its local folder and what it does."""

    name: str
    path: Path
    kind: ModelKind


def resolve_model(spec: str, home: Path) -> ResolvedModel:
    """Find (and if needed convert or download) the model named by `spec`; see the package docstring."""
    if spec in ALIASES:
        source = alias_source(spec)
        if source.suffix == ".gguf":
            return _resolved(spec, convert_gguf(source, home / "models" / spec))
        return _resolved(spec, source)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json; pass a Hugging Face model folder or a .gguf file")
        return _resolved(path.name, path)
    if path.is_file() and path.suffix != ".gguf":
        raise ModelLoadError(f"{path} is a file but not a .gguf; pass a Hugging Face model folder or a .gguf file")
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"no such GGUF file: {path}; check the path passed to --model")
        return _resolved(path.stem, convert_gguf(path, home / "models" / gguf_folder_name(path)))
    if looks_like_hub_id(spec):
        return _resolved(spec.split("/")[-1], download_from_hub(spec))
    raise ModelLoadError(
        f"no such model: {spec} is neither a known alias ({', '.join(ALIASES)}), "
        "a local folder, a .gguf file nor a hub id; check --model"
    )


def served_name(spec: str) -> str:
    """The name `resolve_model(spec)` will give the model, known without resolving it: a worker
    registers under it at once, while it still converts or downloads the model."""
    if spec in ALIASES:
        return spec
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.name
    if path.suffix == ".gguf":
        return path.stem
    if looks_like_hub_id(spec):
        return spec.split("/")[-1]
    return path.name or spec


def _resolved(name: str, folder: Path) -> ResolvedModel:
    return ResolvedModel(name=name, path=folder, kind=detect_kind(folder))
