"""Session-wide model fixtures: the tiny test models, the real default models, and their data home.

`test_home` is the `home` passed to `resolve_model` for the real default models. Point the
environment variable TOKENYARD_TEST_HOME at a persistent folder (the Makefile uses .cache/test-home)
so the one-off GGUF conversion of the default chat model is reused by later runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_chat_model, make_tiny_embedding_model
from tokenyard.models import MINILM_ALIAS, SMOLLM2_ALIAS, ResolvedModel, resolve_model

# Database fixtures (SQLite, PostgreSQL, MariaDB; one database per test): database_url, store, sqlite_url.
pytest_plugins = ["tests.databases"]


@pytest.fixture(scope="session")
def test_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("TOKENYARD_TEST_HOME")
    if configured:
        home = Path(configured).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return home
    return tmp_path_factory.mktemp("tokenyard-home")


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))


@pytest.fixture(scope="session")
def tiny_embedding_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_embedding_model(tmp_path_factory.mktemp("tiny-embedding-model"))


@pytest.fixture(scope="session")
def default_chat_model(test_home: Path) -> ResolvedModel:
    """The real smollm2-135m-instruct; converted from GGUF into `test_home` on the first run only."""
    return resolve_model(SMOLLM2_ALIAS, test_home)


@pytest.fixture(scope="session")
def default_embedding_model(test_home: Path) -> ResolvedModel:
    """The real all-minilm-l6-v2, straight from its wheel."""
    return resolve_model(MINILM_ALIAS, test_home)
