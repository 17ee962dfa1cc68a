"""The pages as plain HTTP: served with their security headers, and shipped inside the package."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tokenyard.config import GatewayConfig, Settings
from tokenyard.gateway.app import create_app
from tokenyard.webui import static_dir

ROOT = Path(__file__).resolve().parents[2]


def client() -> TestClient:
    """Synchronous on purpose: the browser tests' Playwright driver may hold an event loop."""
    return TestClient(create_app(Settings(gateway=GatewayConfig(controller="http://127.0.0.1:9"))))


def test_chat_page_and_its_files_are_served_with_a_strict_policy() -> None:
    with client() as http:
        page = http.get("/")
        script = http.get("/ui/chat.js")
        missing = http.get("/ui/nothing.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/chat.js"></script>' in page.text
    for response in (page, script):
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert missing.status_code == 404


def test_pages_stay_out_of_the_api_schema() -> None:
    with client() as http:
        paths = http.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)


def test_every_static_file_ships_in_the_wheel() -> None:
    """setuptools takes only the package data pyproject names: each page file must match a pattern."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tokenyard"]
    package = static_dir().parent.parent  # src/tokenyard
    files = [p.relative_to(package).as_posix() for p in static_dir().rglob("*") if p.is_file()]
    assert files
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)] == []
