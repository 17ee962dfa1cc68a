"""`tokenyard status` against a live controller."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.integration.processes import Cluster


def test_status_json_lists_workers(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenyard", "status", "--controller", cluster.controller_url, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    workers = json.loads(result.stdout)["workers"]
    assert sorted(m for w in workers for m in w["models"]) == sorted([CHAT_MODEL, EMBEDDING_MODEL])
    for worker in workers:
        assert {"id", "address", "models", "state", "queue_length"} <= set(worker)
        assert worker["state"] == "healthy"
        assert worker["address"].startswith("http://127.0.0.1:")


def test_status_table(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenyard", "status", "--controller", cluster.controller_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert CHAT_MODEL in result.stdout and "healthy" in result.stdout
