"""Settings: defaults, YAML, environment overrides, flags on top, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenyard.config import load_settings
from tokenyard.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TOKENYARD_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert (settings.gateway.host, settings.gateway.port) == ("127.0.0.1", 8000)
    assert settings.controller.port == 21001 and settings.worker.port == 21002
    assert settings.serve.embedding_port == 21003
    assert settings.controller.dispatch.value == "shortest-queue"
    assert settings.worker.model == "smollm2-135m-instruct"
    assert settings.serve.embedding_model == "all-minilm-l6-v2"


def test_precedence_flags_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("worker:\n  port: 1000\n  max_batch_size: 3\n  heartbeat_interval: 5\n")
    monkeypatch.setenv("TOKENYARD_WORKER__PORT", "2000")
    monkeypatch.setenv("TOKENYARD_WORKER__HEARTBEAT_INTERVAL", "4")
    settings = load_settings(config, worker={"heartbeat_interval": 1.5})
    assert settings.worker.port == 2000
    assert settings.worker.max_batch_size == 3
    assert settings.worker.heartbeat_interval == 1.5


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("gateway:\n  port: 9100\n")
    monkeypatch.setenv("TOKENYARD_CONFIG", str(config))
    assert load_settings().gateway.port == 9100


def test_cluster_token_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENYARD_CLUSTER__TOKEN", "s3cret")
    assert load_settings().cluster.secret() == "s3cret"
    monkeypatch.delenv("TOKENYARD_CLUSTER__TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load_settings(cluster={"token_file": str(token_file)}).cluster.secret() == "from-file"
    assert str(load_settings(cluster={"token": "x"}).cluster.token) == "**********"


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("worker:\n  prt: 1\n", "worker.prt"),
        ("worker:\n  max_batch_size: lots\n", "worker.max_batch_size"),
        ("controller:\n  dispatch: fastest\n", "controller.dispatch"),
        ("gateway:\n  port: 70000\n", "gateway.port"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(config)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("worker: [unclosed\n")
    with pytest.raises(ConfigError):
        load_settings(broken)
