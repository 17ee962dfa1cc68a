"""`tokenyard serve` end to end with the real default models, then Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openai import OpenAI

from tests.integration.processes import free_port, service_env, wait_until
from tokenyard.engine import native


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            children.append(int(entry.name))
    return children


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _embedding_worker_ids(controller: str) -> set[str]:
    workers = httpx.get(f"{controller}/workers", timeout=5).json()["workers"]
    return {w["worker_id"] for w in workers if w["state"] == "healthy" and "all-minilm-l6-v2" in w["models"]}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def check_default_models(client: OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["all-minilm-l6-v2", "smollm2-135m-instruct"]
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in (answer.choices[0].message.content or "")
    check_json_schema_answer(client)
    embeddings = client.embeddings.create(model="all-minilm-l6-v2", input=["a cat", "一只猫"])
    assert [len(d.embedding) for d in embeddings.data] == [384, 384]


CAPITAL = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


def check_json_schema_answer(client: OpenAI) -> None:
    """The real 135M model, constrained by a JSON schema, answers in valid JSON (and rightly)."""
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "capital", "schema": CAPITAL, "strict": True},
    }
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        response_format=response_format,
        temperature=0,
        max_tokens=60,
    )
    assert answer.choices[0].finish_reason == "stop"
    content = json.loads(answer.choices[0].message.content or "")
    jsonschema.validate(content, CAPITAL)
    assert content["city"] == "Paris"


@pytest.mark.timeout(600)
def test_serve_default_models_answers_paris_and_stops_cleanly(tmp_path: Path, test_home: Path) -> None:
    port = free_port()
    env = service_env(test_home)
    controller_port = free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    env.update(
        TOKENYARD_CONTROLLER__PORT=str(controller_port),
        TOKENYARD_WORKER__PORT=str(free_port()),
        TOKENYARD_SERVE__EMBEDDING_PORT=str(free_port()),
    )
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "tokenyard", "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    logs = lambda: (tmp_path / "serve.log").read_text(errors="replace")[-8000:]  # noqa: E731
    try:
        assert wait_until(lambda: "tokenyard is serving" in logs() or serve.poll() is not None, 500), logs()
        assert serve.poll() is None, logs()
        # The start line says how the chat model runs: with no flags, the file's own int4 where the kernels load.
        serving = next(line for line in logs().splitlines() if "tokenyard is serving" in line)
        precision = "int4" if native.kernels() is not None else ""
        assert f"smollm2-135m-instruct ({precision}" in serving, serving
        with OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120) as client:
            check_default_models(client)
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
        children = _descendants(serve.pid)
        assert len(children) == 4, logs()
        embedding_worker = next(pid for pid in children if "all-minilm" in _cmdline(pid))
        first_id = _embedding_worker_ids(controller)
        os.kill(embedding_worker, signal.SIGKILL)
        # The supervisor restarts it, and the new process registers itself.
        assert wait_until(lambda: "embedding worker exited" in logs(), timeout=10), logs()
        assert wait_until(lambda: _embedding_worker_ids(controller) - first_id != set(), 90), logs()
        children = _descendants(serve.pid)
        assert embedding_worker not in children and len(children) == 4
        serve.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        assert serve.wait(timeout=30) == 0, logs()
        assert time.monotonic() - stopped_at < 15
        assert wait_until(lambda: not any(_alive(pid) for pid in children), timeout=5), logs()
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()
