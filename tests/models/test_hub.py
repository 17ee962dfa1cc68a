"""Hub ids: offline, a one-line error within seconds, even when the network stalls instead of refusing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.models.helpers import one_line_error
from tokenyard.errors import ModelLoadError
from tokenyard.models import hub, resolve_model


def test_hub_id_offline_fails_fast_with_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # nothing cached there
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as raised:
        resolve_model("some-org/some-model", tmp_path)
    assert time.monotonic() - started < 10
    message = one_line_error(raised)
    assert "some-org/some-model" in message
    assert "unreachable" in message
    assert "--model PATH" in message


def test_hub_probe_gives_up_when_the_network_stalls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stalls(*args: object, **kwargs: object) -> socket.socket:
        time.sleep(5)  # a DNS lookup or connect that never answers
        raise OSError("timed out")

    monkeypatch.setattr(hub, "HUB_CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(hub.socket, "create_connection", stalls)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="unreachable"):
        resolve_model("some-org/some-model", tmp_path)
    assert time.monotonic() - started < 2
