"""Hugging Face hub ids: a cached snapshot, or a download where the hub is reachable.

Offline, a hub id must fail within seconds with a message that says what to do, never hang: the hub
is probed with a TCP connect under a deadline (name lookup included) before the hub library is asked
to download anything.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from tokenyard.errors import ModelLoadError

HUB_CONNECT_TIMEOUT = 3.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(spec: str) -> bool:
    """`org/name` that is not a local path: the last kind of `--model` spec tried."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists()


def download_from_hub(repo_id: str) -> Path:
    """A cached snapshot if there is one, else a download; offline, fail within seconds, never hang."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (the hub library raises several types for that)
        pass
    host, port = _hub_address()
    if not _reachable(host, port):
        raise ModelLoadError(
            f"{repo_id} is neither a local path nor a known alias, and the hub ({host}) is unreachable; "
            "download the model to a folder and pass --model PATH"
        )
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot download {repo_id} from {host}: {first}") from exc


def _hub_address() -> tuple[str, int]:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    default_port = 80 if endpoint.scheme == "http" else 443
    return endpoint.hostname or "huggingface.co", endpoint.port or default_port


def _reachable(host: str, port: int) -> bool:
    """A TCP connect within HUB_CONNECT_TIMEOUT, name lookup included.

    The socket timeout does not cover DNS, which can stall far longer offline, so the probe runs in
    a daemon thread that is simply abandoned when the deadline passes.
    """
    answers: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT):
                answers.append(True)
        except OSError:  # refused, unresolvable or timed out
            answers.append(False)

    thread = threading.Thread(target=probe, name="tokenyard-hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_CONNECT_TIMEOUT)
    return bool(answers and answers[0])
