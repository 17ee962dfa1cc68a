"""Database URLs: the shipped drivers are chosen, passwords never shown, bad URLs named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenyard.errors import ConfigError
from tokenyard.store.config import DatabaseConfig
from tokenyard.store.engine import normalise_url, safe_url


def test_bare_server_urls_get_the_installed_drivers() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    mysql = normalise_url("mysql://u@h/db")
    assert mysql.drivername == "mysql+pymysql"
    assert mysql.query["charset"] == "utf8mb4"
    assert normalise_url("mariadb://u@h/db").drivername == "mysql+pymysql"


def test_passwords_are_masked() -> None:
    shown = safe_url(normalise_url("postgresql+psycopg://user:hunter2@db.example/ty"))
    assert "hunter2" not in shown
    assert "db.example" in shown


@pytest.mark.parametrize("url", ["oracle://x/y", "not a url"])
def test_unsupported_urls_are_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"database\.url"):
        normalise_url(url)


def test_default_is_sqlite_under_the_data_directory(tmp_path: Path) -> None:
    assert DatabaseConfig().resolved_url(tmp_path) == f"sqlite:///{tmp_path / 'tokenyard.db'}"
    assert DatabaseConfig(url="sqlite:///x.db").resolved_url(tmp_path) == "sqlite:///x.db"
