"""`tokenyard keys ...` and `tokenyard tenants ...`: the store's tenants and keys from the shell.

They act on the database the configuration names (the gateway's). A key's value is printed once,
by `keys create`, on stdout alone (so `KEY=$(tokenyard keys create --tenant t)` works); nothing else
ever prints more than its prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from tokenyard.config import Settings, load_settings
from tokenyard.errors import TokenyardError
from tokenyard.governance import keys as key_ops
from tokenyard.governance import tenants as tenant_ops
from tokenyard.governance.access_version import bump_sync
from tokenyard.governance.quota_admin import QuotaView, get_quota, set_quota
from tokenyard.governance.quota_command import describe, quota_change, quota_options
from tokenyard.store import Store
from tokenyard.textwidth import ljust

T = TypeVar("T")
CONFIG = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="YAML settings file (or TOKENYARD_CONFIG)."
)


def csv_list(_ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    return None if value is None else [item.strip() for item in value.split(",") if item.strip()]


MODELS = click.option("--models", callback=csv_list, help="Comma-separated model names ('*': every model).")
IP_ALLOW = click.option("--ip-allow", "ip_allow", callback=csv_list, help="Comma-separated CIDRs (IPv4/IPv6).")


@contextmanager
def opened_store(settings: Settings) -> Iterator[Store]:
    """The configured store, at this code's schema (a SQLite file is brought up to date here)."""
    store = Store(settings.database_url(), settings.database.pool_size)
    try:
        if store.kind == "sqlite":
            store.upgrade()
        else:
            store.require_current_schema()
        yield store
    finally:
        store.close()


def run(config_file: str | None, operation: Callable[[Store], T], *, changes: bool = False) -> T:
    """Run one governance operation; its typed errors become one-line CLI errors (exit 1)."""
    settings = load_settings(config_file)
    with opened_store(settings) as store:
        try:
            result = operation(store)
        except TokenyardError as exc:
            raise click.ClickException(exc.message) from None
    if changes and settings.redis.url and not bump_sync(settings.redis.url, settings.redis.key_prefix):
        click.echo("warning: redis unreachable; gateways will see this change within a second", err=True)
    return result


def echo_json(value: BaseModel | list[Any]) -> None:
    data = [v.model_dump(mode="json") for v in value] if isinstance(value, list) else value.model_dump(mode="json")
    click.echo(json.dumps(data, ensure_ascii=False))


def limit(value: int | None) -> str:
    return "-" if value is None else str(value)


@click.group()
def keys() -> None:
    """Tenants' API keys: create (printed once), list (prefixes only), revoke."""


@keys.command("create")
@CONFIG
@click.option("--tenant", required=True, help="Tenant the key belongs to (created if new).")
@MODELS
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens (prompt + max_tokens) per minute.")
@click.option("--max-parallel", type=click.IntRange(min=1), help="Requests at once.")
@click.option("--expires-days", type=click.FloatRange(min=0, min_open=True), help="Days until the key expires.")
@IP_ALLOW
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def create_key(config_file: str | None, ip_allow: list[str] | None, output_format: str, **fields: Any) -> None:
    """Create a key and print it once: it cannot be shown again."""
    settings = key_ops.KeySettings(**fields, ip_allowlist=ip_allow or [])
    created = run(config_file, lambda store: key_ops.create_key(store, settings), changes=True)
    if output_format == "json":
        echo_json(created)
        return
    click.echo(created.key)
    click.echo(f"key {created.prefix} for tenant {created.tenant}: shown only this once", err=True)


@keys.command("list")
@CONFIG
@click.option("--tenant", help="Only this tenant's keys.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def list_keys(config_file: str | None, tenant: str | None, output_format: str) -> None:
    """List keys by prefix (a key's value is never stored, so never shown)."""
    found = run(config_file, lambda store: key_ops.list_keys(store, tenant))
    if output_format == "json":
        echo_json(found)
        return
    click.echo(f"{'PREFIX':<12} {'TENANT':<20} {'STATE':<8} {'RPM':>6} {'TPM':>8} {'PAR':>4}  EXPIRES  MODELS")
    for k in found:
        models = "*" if k.models is None else ",".join(k.models)
        expires = k.expires_at.strftime("%Y-%m-%d") if k.expires_at else "-"
        click.echo(
            f"{k.prefix:<12} {ljust(k.tenant, 20)} {k.state:<8} {limit(k.rpm):>6} {limit(k.tpm):>8} "
            f"{limit(k.max_parallel):>4}  {expires}  {models}"
        )


@keys.command("revoke")
@CONFIG
@click.argument("prefix")
def revoke_key(config_file: str | None, prefix: str) -> None:
    """Revoke the key with this prefix (as `keys list` shows it); every gateway refuses it at once."""
    view = run(config_file, lambda store: key_ops.revoke_key(store, prefix), changes=True)
    click.echo(f"revoked {view.prefix} (tenant {view.tenant})")


@click.group()
def tenants() -> None:
    """Tenants and their defaults: models, rate limits, IP allow-list."""


def tenant_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            MODELS,
            click.option("--rpm", type=click.IntRange(min=0), help="Requests per minute (0: no limit)."),
            click.option("--tpm", type=click.IntRange(min=0), help="Tokens per minute (0: no limit)."),
            click.option("--max-parallel", type=click.IntRange(min=0), help="Requests at once (0: no limit)."),
            IP_ALLOW,
        ]
    ):
        function = option(function)
    return function


def tenant_settings(ip_allow: list[str] | None, fields: dict[str, Any]) -> tenant_ops.TenantSettings:
    given = {k: v for k, v in fields.items() if v is not None}
    if ip_allow is not None:
        given["ip_allowlist"] = ip_allow
    return tenant_ops.TenantSettings(**given)


def print_tenant(view: tenant_ops.TenantView) -> None:
    models = "*" if view.models is None else ",".join(view.models)
    networks = ",".join(view.ip_allowlist) or "-"
    click.echo(
        f"{ljust(view.name, 20)} {limit(view.rpm):>6} {limit(view.tpm):>8} {limit(view.max_parallel):>4}"
        f"  {networks}  {models}"
    )


@tenants.command("create")
@CONFIG
@click.argument("name")
@tenant_options
def create_tenant(config_file: str | None, name: str, ip_allow: list[str] | None, **fields: Any) -> None:
    """Create a tenant (an error if it exists; `tenants set` creates or changes)."""
    settings = tenant_settings(ip_allow, fields)
    print_tenant(run(config_file, lambda store: tenant_ops.create_tenant(store, name, settings), changes=True))


@tenants.command("set")
@CONFIG
@click.argument("name")
@tenant_options
@quota_options
def set_tenant(config_file: str | None, name: str, ip_allow: list[str] | None, **fields: Any) -> None:
    """Change a tenant's defaults and quota (created if new); options not given stay as they are."""
    quota = quota_change(fields)
    settings = tenant_settings(ip_allow, fields)

    def change(store: Store) -> tuple[tenant_ops.TenantView, QuotaView | None]:
        view = tenant_ops.set_tenant(store, name, settings)
        if quota is not None:
            set_quota(store, "tenant", name, quota)
        return view, get_quota(store, "tenant", name)

    view, quota_view = run(config_file, change, changes=True)
    print_tenant(view)
    if quota is not None:
        click.echo(describe(quota_view))


@tenants.command("list")
@CONFIG
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def list_tenants(config_file: str | None, output_format: str) -> None:
    """List tenants and their defaults."""
    found = run(config_file, tenant_ops.list_tenants)
    if output_format == "json":
        echo_json(found)
        return
    click.echo(f"{'TENANT':<20} {'RPM':>6} {'TPM':>8} {'PAR':>4}  IP-ALLOW  MODELS")
    for view in found:
        print_tenant(view)
