"""The `tokenyard` command: one group; each subcommand builds Settings and runs one service.

User mistakes (bad flags, bad config, a model that cannot load) end with one line on stderr and
a non-zero exit code (2 for usage and configuration), never a traceback.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

import click
import httpx

from tokenyard import __version__, status_view
from tokenyard.config import Settings, load_settings
from tokenyard.errors import ConfigError, ModelLoadError, StoreError
from tokenyard.observability.logs import setup_logging
from tokenyard.observability.tracing import setup_tracing
from tokenyard.protocol.internal import DispatchPolicy
from tokenyard.web import cluster_headers

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML settings file (or TOKENYARD_CONFIG).",
)


def _setup_logging(role: str, settings: Settings) -> None:
    """Readable lines on a terminal, JSON lines otherwise (`logging.format`); tracing when asked."""
    setup_logging(role, settings.logging)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    setup_tracing(role, settings.tracing)


def _settings(config_file: str | None, **sections: dict[str, Any]) -> Settings:
    """Settings with only the flags the user actually gave laid over file and environment."""
    overrides = {name: {k: v for k, v in values.items() if v is not None} for name, values in sections.items()}
    return load_settings(config_file, **{k: v for k, v in overrides.items() if v})


class LazyGroup(click.Group):
    """A command group that imports the modules of some subcommands only when one of them is used.

    The governance and store commands pull in SQLAlchemy's asyncio layer, redis and more (~10 MiB of
    RSS): a worker or controller process never needs them."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)


LAZY_COMMANDS = {
    "bench": "tokenyard.bench.command:bench",
    "db": "tokenyard.store.command:db",
    "keys": "tokenyard.governance.command:keys",
    "tenants": "tokenyard.governance.command:tenants",
    "usage": "tokenyard.governance.report_command:usage",
    "logs": "tokenyard.governance.report_command:logs",
}


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokenyard")
def cli() -> None:
    """tokenyard: self-hosted, OpenAI-compatible LLM serving (controller, workers, gateway)."""


@cli.command()
@CONFIG_OPTION
@click.option("--host", help="Gateway address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), help="Gateway port.  [default: 8000]")
@click.option("--model", help="Chat model: alias, local folder, .gguf file or hub id.")
@click.option("--embedding-model", help="Embedding model, or 'none' for no embedding worker.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Chat worker's device.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), help="Chat worker's dtype.")
@click.option(
    "--quantization", type=click.Choice(["auto", "none", "int8", "int4", "gguf"]), help="Chat worker's weights."
)
@click.option("--max-batch-size", type=click.IntRange(min=1), help="Chat worker's batch size.")
@click.option("--context-length", type=click.IntRange(min=16), help="Chat worker's context length.")
def serve(
    config_file: str | None,
    host: str | None,
    port: int | None,
    model: str | None,
    embedding_model: str | None,
    **chat: Any,
) -> None:
    """Run controller, a chat worker, an embedding worker and the gateway, supervised, until Ctrl-C.

    --device, --dtype, --quantization, --max-batch-size and --context-length reach the chat worker
    only; the embedding worker keeps its defaults.
    """
    settings = _settings(
        config_file,
        gateway={"host": host, "port": port},
        worker={"model": model, **chat},
        serve={"embedding_model": embedding_model},
    )
    _setup_logging("serve", settings)
    from tokenyard.serve import run_serve  # heavy imports only once the settings are valid

    sys.exit(run_serve(settings, config_file, {k: v for k, v in chat.items() if v is not None}))


@cli.command()
@CONFIG_OPTION
@click.option("--host", help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), help="Port.  [default: 21001]")
@click.option(
    "--dispatch",
    type=click.Choice([p.value for p in DispatchPolicy]),
    help="How a worker is picked.  [default: shortest-queue]",
)
def controller(config_file: str | None, host: str | None, port: int | None, dispatch: str | None) -> None:
    """Run the controller: worker registry, heartbeats, health and dispatch."""
    settings = _settings(config_file, controller={"host": host, "port": port, "dispatch": dispatch})
    _setup_logging("controller", settings)
    from tokenyard.controller.main import run_controller

    run_controller(settings.controller, settings.cluster.secret(), settings.metrics, settings.admin_secret())


def _one_gpu_only(_ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """FastChat splits one model over several GPUs; a tokenyard worker runs on one device."""
    if value is not None and value != 1:
        raise click.BadParameter(
            "a tokenyard worker runs its model on one device, so only --num-gpus 1 is accepted; "
            "for several GPUs start one worker per GPU (CUDA_VISIBLE_DEVICES=N tokenyard worker ...)",
            param=param,
        )


@cli.command()
@CONFIG_OPTION
@click.option("--model", "--model-path", "model", help="Alias, local Hugging Face folder, .gguf file or hub id.")
@click.option("--model-name", "model_names", multiple=True, help="Alias to serve it as (repeatable).")
@click.option("--model-names", "model_names_csv", help="Aliases, comma-separated (FastChat's form).")
@click.option(
    "--controller",
    "--controller-address",
    "--controller-url",
    "controller_url",
    help="Controller URL.  [default: http://127.0.0.1:21001]",
)
@click.option("--host", help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), help="Port.  [default: 21002]")
@click.option(
    "--advertise-address",
    "--worker-address",
    "advertise_address",
    help="URL the gateway should use to reach this worker.",
)
@click.option("--num-gpus", type=int, callback=_one_gpu_only, expose_value=False, help="FastChat's flag: only 1.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]))
@click.option("--quantization", type=click.Choice(["auto", "none", "int8", "int4", "gguf"]))
@click.option("--max-batch-size", type=click.IntRange(min=1))
@click.option("--batch-wait-timeout", type=click.FloatRange(min=0), help="Seconds.")
@click.option("--context-length", type=click.IntRange(min=16))
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True))
@click.option("--kv-cache-memory", type=click.FloatRange(0, min_open=True), help="GiB for the KV cache.")
@click.option("--enforce-eager", is_flag=True, default=None, help="CUDA: decode without CUDA graphs.")
@click.option("--heartbeat-interval", type=click.FloatRange(0, min_open=True), help="Seconds.  [default: 2]")
@click.option("--tenant", "tenants", multiple=True, help="Serve only this tenant (repeatable); default: every tenant.")
def worker(
    config_file: str | None,
    model_names: tuple[str, ...],
    model_names_csv: str | None,
    controller_url: str | None,
    **flags: Any,
) -> None:
    """Run one model worker that registers with the controller.

    FastChat's model_worker flags are accepted too: --model-path, --controller-address (or
    --controller-url), --worker-address, --model-names a,b; see docs/migrating-from-fastchat.md.
    """
    names = [*model_names, *(n.strip() for n in (model_names_csv or "").split(",") if n.strip())]
    values = dict(flags, controller=controller_url, model_names=names or None)
    settings = _settings(config_file, worker=values)
    _setup_logging("worker", settings)
    from tokenyard.worker.main import run_worker

    run_worker(settings)


@cli.command()
@CONFIG_OPTION
@click.option("--host", help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), help="Port.  [default: 8000]")
@click.option("--controller", "controller_url", help="Controller URL.  [default: http://127.0.0.1:21001]")
def gateway(config_file: str | None, host: str | None, port: int | None, controller_url: str | None) -> None:
    """Run the OpenAI-compatible API gateway."""
    settings = _settings(config_file, gateway={"host": host, "port": port, "controller": controller_url})
    _setup_logging("gateway", settings)
    from tokenyard.gateway.main import run_gateway

    run_gateway(settings)


@cli.command()
@CONFIG_OPTION
@click.option("--controller", "controller_url", help="Controller URL.  [default: http://127.0.0.1:21001]")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
@click.option("--watch", is_flag=True, help="Redraw a live table every second until Ctrl-C.")
def status(config_file: str | None, controller_url: str | None, output_format: str, watch: bool) -> None:
    """Show the controller's view: workers, models, state, queue, batch, tokens/s, KV usage."""
    settings = _settings(config_file, gateway={"controller": controller_url})
    url = settings.gateway.controller.rstrip("/")
    with httpx.Client(headers=cluster_headers(settings.cluster.secret())) as client:
        if watch:
            if output_format == "json":
                raise click.UsageError("--watch draws a table; it cannot be combined with --format json")
            status_view.watch(client, url)
            return
        workers = status_view.fetch_workers(client, url)
    if output_format == "json":
        click.echo(json.dumps({"workers": status_view.rows(workers)}, ensure_ascii=False))
        return
    click.echo(status_view.table(workers))


# Defined in its own package (flags, load generator, report); registered here as one more subcommand.


def main() -> None:
    """Entry point: usage and configuration errors exit 2 with one line; model errors exit 1."""
    try:
        cli.main(standalone_mode=False, prog_name="tokenyard")
    except click.UsageError as exc:
        where = f"tokenyard {exc.ctx.info_name}" if exc.ctx and exc.ctx.info_name != "tokenyard" else "tokenyard"
        click.echo(f"{where}: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"tokenyard: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"tokenyard: error: {exc}", err=True)
        sys.exit(2)
    except (ModelLoadError, StoreError) as exc:
        click.echo(f"tokenyard: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
