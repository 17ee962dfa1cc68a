"""Conversation logs end to end: nothing lost through a database outage, a SIGTERM or a SIGKILL (a
PostgreSQL behind a TCP proxy the test cuts and restores), and the CLI's list, show, usage and replay."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tests.databases import ServerDatabases
from tests.integration.governed import GovernedGateway, migrate, wait_for_models
from tests.integration.processes import Cluster, wait_until
from tests.integration.tcp_proxy import TcpProxy
from tokenyard.cli import cli
from tokenyard.store import ConversationRow, Store, UsageRow


class Client:
    """Sends chat requests with ids of its own and remembers those answered."""

    def __init__(self) -> None:
        self.answered: list[str] = []

    def send(self, gateway: GovernedGateway, count: int) -> None:
        for _ in range(count):
            request_id = f"outage-{len(self.answered)}"
            response = gateway.chat("你好", max_tokens=3, headers={"X-Request-ID": request_id})
            assert response.status_code == 200, (response.text, gateway.service.logs())
            self.answered.append(request_id)


def stored_ids(store: Store, table: type[UsageRow] | type[ConversationRow]) -> list[str]:
    with store.session() as session:
        return sorted(session.scalars(select(table.request_id)))


def test_no_record_is_lost_through_an_outage_a_sigterm_and_a_sigkill(
    cluster: Cluster, server_databases: dict[str, ServerDatabases | str], tmp_path: Path
) -> None:
    server = server_databases["postgresql"]
    if isinstance(server, str):
        pytest.skip(server)
    url = server.create()
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    store = Store(url.render_as_string(hide_password=False))
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    sections = {
        "logs": {"enabled": True},
        "metering": {"enabled": True, "journal_dir": str(tmp_path / "journal"), "drain_timeout": 2},
    }
    client = Client()
    gateways: list[GovernedGateway] = []

    def start() -> GovernedGateway:
        gateways.append(GovernedGateway(cluster, f"gateway-outage-{len(gateways)}", through_proxy, **sections))
        wait_for_models(gateways[-1].start())
        return gateways[-1]

    def all_stored() -> bool:
        return stored_ids(store, ConversationRow) == sorted(client.answered)

    try:
        migrate(url.render_as_string(hide_password=False))
        gateway = start()
        client.send(gateway, 3)
        proxy.cut()  # the database goes away: the gateway keeps serving, the journal grows
        client.send(gateway, 6)
        assert len(stored_ids(store, ConversationRow)) <= 3
        proxy.restore()
        assert wait_until(all_stored, timeout=30), gateway.service.logs()
        proxy.cut()
        client.send(gateway, 3)
        gateway.service.signal(signal.SIGTERM)  # drains for 2 s, cannot reach the database, stops
        assert gateway.service.wait(timeout=30) is not None
        proxy.restore()
        gateway = start()  # writes the journal left by the SIGTERM'd gateway
        assert wait_until(all_stored, timeout=30), gateway.service.logs()
        proxy.cut()
        client.send(gateway, 3)
        gateway.service.signal(signal.SIGKILL)
        gateway.service.wait(timeout=10)
        proxy.restore()
        gateway = start()  # replays the journal of the killed gateway
        assert wait_until(all_stored, timeout=30), gateway.service.logs()
        assert stored_ids(store, UsageRow) == sorted(client.answered)  # each exactly once
    finally:
        for running in gateways:
            running.service.stop()
        proxy.close()
        store.close()
        server.drop(url)


def test_the_cli_lists_shows_replays_and_reports(cluster: Cluster, sqlite_url: str) -> None:
    migrate(sqlite_url)
    prices = {"tiny-chat": {"per_call": "0.002", "per_1k_prompt": "0.1", "per_1k_completion": "0.3"}}
    gateway = GovernedGateway(cluster, "gateway-cli", sqlite_url, logs={"enabled": True}, billing={"prices": prices})
    store = Store(sqlite_url)
    try:
        wait_for_models(gateway.start())
        question = "What is the capital of France? 请回答。"
        answer = gateway.chat(question, temperature=0, max_tokens=16, seed=3, headers={"X-Request-ID": "cli-1"})
        assert answer.status_code == 200
        assert wait_until(lambda: stored_ids(store, ConversationRow) == ["cli-1"], timeout=20)
        runner = CliRunner()
        config = ["--config", str(gateway.config_path)]

        listed = runner.invoke(cli, ["logs", "list", *config, "--contains", "请回答", "--format", "json"])
        assert listed.exit_code == 0, listed.output
        [summary] = json.loads(listed.output)
        assert summary["request_id"] == "cli-1" and summary["id"]

        shown = runner.invoke(cli, ["logs", "show", summary["id"], *config, "--format", "json"])
        record = json.loads(shown.output)
        assert record["outputs"] == [answer.json()["choices"][0]["message"]["content"]]
        assert record["request"]["seed"] == 3 and record["request"]["messages"][0]["content"] == question
        assert re.fullmatch(r"sha256:[0-9a-f]{16} \(\w+ on cpu\)", record["model_revision"]), record["model_revision"]

        replayed = runner.invoke(cli, ["logs", "replay", "cli-1", *config, "--url", gateway.url])
        assert replayed.exit_code == 0 and replayed.output.startswith("identical"), replayed.output

        report = runner.invoke(cli, ["usage", *config, "--group-by", "model", "--format", "csv"])
        lines = report.output.splitlines()
        assert lines[0].startswith("tenant,model,requests,calls,")
        assert lines[1].startswith("default,tiny-chat,")
    finally:
        gateway.service.stop()
        store.close()
