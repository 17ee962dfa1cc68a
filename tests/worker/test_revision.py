"""A model's revision: the hub commit of a snapshot, else a fingerprint that changes with the weights."""

from __future__ import annotations

from pathlib import Path

from tokenyard.worker.revision import SAMPLE_BYTES, SAMPLES, model_revision


def folder_with(path: Path, weights: bytes, config: str = '{"hidden_size": 8}') -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(config)
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_hub_snapshot_is_named_by_its_commit(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = folder_with(tmp_path / "models--org--m" / "snapshots" / commit, b"weights")
    assert model_revision(folder) == f"hub:{commit}"


def test_the_fingerprint_follows_the_weights_and_the_config_not_the_folder(tmp_path: Path) -> None:
    big = bytes(range(256)) * (SAMPLES * SAMPLE_BYTES // 128)  # larger than the sample: sampled, not read whole
    original = model_revision(folder_with(tmp_path / "a", big))
    assert original.startswith("sha256:") and len(original) == len("sha256:") + 16
    assert model_revision(folder_with(tmp_path / "copy", big)) == original  # same files elsewhere
    tuned = bytearray(big)
    for offset in range(0, len(tuned), 4096):  # a fine-tune: same size, bytes changed throughout
        tuned[offset] ^= 0xFF
    assert model_revision(folder_with(tmp_path / "tuned", bytes(tuned))) != original
    assert model_revision(folder_with(tmp_path / "config", big, '{"hidden_size": 16}')) != original
