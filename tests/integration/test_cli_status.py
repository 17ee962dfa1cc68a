"""`tokenyard status` against a live controller."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

from tests.integration.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.integration.processes import Cluster, wait_until


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


def test_status_watch_redraws_a_live_table_until_ctrl_c(cluster: Cluster) -> None:
    watch = subprocess.Popen(
        [sys.executable, "-m", "tokenyard", "status", "--controller", cluster.controller_url, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a suite started in the background (`make test &`) passes SIGINT on ignored,
        # and Python then never turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        assert wait_until(lambda: sum("(Ctrl-C stops)" in line for line in lines) >= 2, timeout=60)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)  # interpreter shutdown can be slow on a busy machine
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()  # closes the pipes
    assert watch.returncode == 130, err
    assert "Traceback" not in err
    chat = next(line for line in lines if CHAT_MODEL in line)
    assert "healthy" in chat and chat.split()[-1].endswith("%")  # the chat worker's KV usage
