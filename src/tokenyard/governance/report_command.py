"""`tokenyard usage` and `tokenyard logs list|show|replay|export`: reports and stored conversations.

They read the database the configuration names (the gateway's). `logs replay` sends a stored
request again, with its stored seed and parameters, to a gateway (`--url`; the API key, if auth is
on, from the environment variable TOKENYARD_API_KEY, never a flag) and says whether the answer is
identical to the stored one.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import AbstractContextManager
from datetime import datetime, time, timedelta, timezone
from typing import Any

import click
import httpx

from tokenyard.config import load_settings
from tokenyard.governance.command import opened_store
from tokenyard.governance.conversations import (
    ConversationFilter,
    export_conversations,
    get_conversation,
    list_conversations,
)
from tokenyard.governance.records import ConversationRecord
from tokenyard.governance.reports import UsageQuery, to_csv, to_table, usage_report
from tokenyard.store import Store
from tokenyard.textwidth import ljust

CONFIG = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="YAML settings file (or TOKENYARD_CONFIG)."
)
DAY = click.DateTime(formats=["%Y-%m-%d"])
WHEN = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


def opened(config_file: str | None) -> AbstractContextManager[Store]:
    """The configured store at this code's schema (a SQLite file is migrated here)."""
    return opened_store(load_settings(config_file))


def utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=timezone.utc)


@click.command()
@CONFIG
@click.option("--tenant", help="Only this tenant.")
@click.option("--since", type=DAY, help="First day (UTC, YYYY-MM-DD), inclusive.")
@click.option("--until", type=DAY, help="Last day (UTC, YYYY-MM-DD), inclusive.")
@click.option("--group-by", type=click.Choice(["day", "model", "key"]), default="day", show_default=True)
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]), default="table")
def usage(
    config_file: str | None,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    group_by: str,
    output_format: str,
) -> None:
    """Calls, tokens and cost per tenant and day, model or key (from the daily rollups)."""
    query = UsageQuery(
        tenant=tenant,
        since=since.date() if since else None,
        until=until.date() if until else None,
        group_by=group_by,  # type: ignore[arg-type]
    )
    currency = load_settings(config_file).billing.currency
    with opened(config_file) as store:
        lines = usage_report(store, query)
    if output_format == "json":
        click.echo(json.dumps([line.model_dump(mode="json") for line in lines], ensure_ascii=False))
    elif output_format == "csv":
        click.echo(to_csv(lines, query.group_by, currency), nl=False)
    else:
        click.echo(to_table(lines, query.group_by, currency))


@click.group()
def logs() -> None:
    """Stored conversations (logs.enabled): list, show, replay, export."""


def _filters(
    tenant: str | None, model: str | None, since: datetime | None, until: datetime | None
) -> ConversationFilter:
    end = utc(until)
    if until is not None and until.time() == time(0):
        end = utc(until + timedelta(days=1))  # a bare day means up to its end
    return ConversationFilter(tenant=tenant, model=model, since=utc(since), until=end)


@logs.command("list")
@CONFIG
@click.option("--tenant")
@click.option("--model")
@click.option("--since", type=WHEN, help="UTC, YYYY-MM-DD[THH:MM:SS].")
@click.option("--until", type=WHEN, help="UTC; a bare day includes that whole day.")
@click.option("--contains", help="Text in the request or the answer (full content only).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def list_command(
    config_file: str | None,
    tenant: str | None,
    model: str | None,
    since: datetime | None,
    until: datetime | None,
    contains: str | None,
    limit: int,
    output_format: str,
) -> None:
    """The newest conversations first."""
    filters = _filters(tenant, model, since, until)
    filters.contains = contains
    with opened(config_file) as store:
        found = list_conversations(store, filters, limit)
    if output_format == "json":
        click.echo(json.dumps([c.model_dump(mode="json") for c in found], ensure_ascii=False))
        return
    click.echo(f"{'ID':<34} {'CREATED (UTC)':<20} {'TENANT':<16} {'MODEL':<24} {'STATUS':>6}  ANSWER")
    for c in found:
        stamp = c.created_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{c.id:<34} {stamp:<20} {ljust(c.tenant, 16)} {ljust(c.model, 24)} {c.status:>6}  {c.preview}")


def _load(config_file: str | None, ident: str) -> ConversationRecord:
    with opened(config_file) as store:
        record = get_conversation(store, ident)
    if record is None:
        raise click.ClickException(f"no stored conversation with id or request id {ident!r}")
    return record


@logs.command("show")
@CONFIG
@click.argument("ident", metavar="ID")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def show(config_file: str | None, ident: str, output_format: str) -> None:
    """One conversation, whole (ID: its id from `logs list`, or its X-Request-ID)."""
    record = _load(config_file, ident)
    if output_format == "json":
        click.echo(record.model_dump_json())
        return
    click.echo(f"id {record.id}  request {record.request_id}  {record.created_at.isoformat()}")
    click.echo(f"tenant {record.tenant}  key {record.key_prefix or '-'}  model {record.model}  worker {record.worker}")
    click.echo(f"status {record.status}  usage {record.usage}  cost {record.cost}  latency {record.latency_ms} ms")
    click.echo("request: " + json.dumps(record.request, ensure_ascii=False, indent=2))
    for n, text in enumerate(record.outputs):
        click.echo(f"answer {n}: {text}")


@logs.command("export")
@CONFIG
@click.option("--since", type=WHEN, required=True, help="UTC, YYYY-MM-DD[THH:MM:SS].")
@click.option("--until", type=WHEN)
@click.option("--tenant")
@click.option("--format", "output_format", type=click.Choice(["jsonl"]), default="jsonl")
def export(
    config_file: str | None, since: datetime, until: datetime | None, tenant: str | None, output_format: str
) -> None:
    """Every conversation since a time, oldest first, one JSON object per line."""
    with opened(config_file) as store:
        for record in export_conversations(store, _filters(tenant, None, since, until)):
            sys.stdout.write(record.model_dump_json() + "\n")


@logs.command("replay")
@CONFIG
@click.argument("ident", metavar="ID")
@click.option("--url", help="Gateway to send it to.  [default: the configured gateway address]")
def replay(config_file: str | None, ident: str, url: str | None) -> None:
    """Send a stored request again (same seed and parameters) and say whether the answer is identical."""
    record = _load(config_file, ident)
    if record.store_content != "full":
        raise click.ClickException(f"cannot replay {ident}: its content was stored as {record.store_content!r}")
    settings = load_settings(config_file)
    base = (url or f"http://{settings.gateway.host}:{settings.gateway.port}").rstrip("/")
    body = {k: v for k, v in record.request.items() if k not in ("stream", "stream_options")}
    key = os.environ.get("TOKENYARD_API_KEY")
    headers = {"X-Request-ID": f"replay-{record.id}"} | ({"Authorization": f"Bearer {key}"} if key else {})
    try:
        response = httpx.post(base + record.endpoint, json=body, headers=headers, timeout=600)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"the gateway answered {response.status_code}: {response.text[:300]}")
    outputs = answers_of(response.json())
    if outputs == record.outputs:
        click.echo(f"identical: {len(outputs)} answer(s) match the stored conversation {record.id}")
        return
    click.echo(f"different from the stored conversation {record.id}:")
    if record.model_revision:
        click.echo(f"  (stored from model revision {record.model_revision}: other weights or precision change answers)")
    for n, (old, new) in enumerate(zip(record.outputs, outputs, strict=False)):
        if old != new:
            at = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
            click.echo(
                f"  answer {n} differs from character {at}: stored {old[at : at + 40]!r}, now {new[at : at + 40]!r}"
            )
    sys.exit(1)


def answers_of(body: dict[str, Any]) -> list[str]:
    """Each choice's text, in choice order, from a chat or a text completion."""
    choices: list[dict[str, Any]] = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
    return [(c["message"].get("content") or "") if "message" in c else c.get("text", "") for c in choices]
