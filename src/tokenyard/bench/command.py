"""The `tokenyard bench` command: flags in, one report out (cli.py registers it).

Exit status: 0 when every request succeeded, 1 when some failed (the report is printed all the same)
or the server could not be benchmarked at all, 2 for bad flags.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from tokenyard.bench.loadgen import DEFAULT_PROMPTS, BenchError, BenchSettings, normalise_base_url, run_bench
from tokenyard.bench.report import render_table, report_dict
from tokenyard.bench.stats import LevelSummary


def _concurrency_levels(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 1,4,16, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"expected positive integers such as 1,4,16, got {value!r}")
    return levels


def _base_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return normalise_base_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _extra_body(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        body = json.loads(value)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise click.BadParameter(f"expected a JSON object, got {value!r}")
    return body


def _prompts(prompts: tuple[str, ...], prompts_file: str | None) -> tuple[str, ...]:
    """--prompt values, then the file's non-blank lines; the built-in set when neither is given."""
    from_file = []
    if prompts_file is not None:
        from_file = [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
        if not from_file:
            raise click.BadParameter(f"{prompts_file} has no non-blank line", param_hint="'--prompts-file'")
    return (*prompts, *from_file) or DEFAULT_PROMPTS


def _progress(summary: LevelSummary) -> None:
    click.echo(
        f"concurrency {summary.concurrency}: {summary.requests} requests in {summary.duration_s:.1f} s, "
        f"{summary.output_tok_per_s:.1f} tok/s, {summary.errors} errors",
        err=True,
    )


@click.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    callback=_base_url,
    help="Server base URL (with or without /v1).",
)
@click.option("--model", default="", help="Model id to request.  [default: the server's first model]")
@click.option(
    "--concurrency",
    default="1,4,16",
    show_default=True,
    callback=_concurrency_levels,
    help="Comma-separated numbers of simultaneous streams, one level each.",
)
@click.option(
    "--requests",
    "num_requests",
    type=click.IntRange(min=1),
    help="Requests per level.  [default: 4 x concurrency, at least 8]",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable); requests cycle through them.")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False), help="One prompt per line.")
@click.option("--chat/--completions", default=True, show_default=True, help="Which endpoint to load.")
@click.option("--ignore-eos", is_flag=True, help="Ask the server to always generate --max-tokens tokens.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Unmeasured requests sent first, one at a time.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds one request may take.",
)
@click.option("--extra-body", callback=_extra_body, help="JSON object merged into every request body.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer key (or OPENAI_API_KEY).")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
def bench(
    concurrency: list[int],
    num_requests: int | None,
    prompts: tuple[str, ...],
    prompts_file: str | None,
    warmup: int,
    output_format: str,
    **options: Any,
) -> None:
    """Load test an OpenAI-compatible server: output tok/s, TTFT, inter-token latency, percentiles."""
    settings = BenchSettings(
        base_url=options["url"],
        model=options["model"],
        prompts=_prompts(prompts, prompts_file),
        max_tokens=options["max_tokens"],
        chat=options["chat"],
        ignore_eos=options["ignore_eos"],
        temperature=options["temperature"],
        api_key=options["api_key"],
        timeout=options["timeout"],
        extra_body=options["extra_body"],
    )
    levels = [(c, num_requests or max(8, 4 * c)) for c in concurrency]
    try:
        settings, summaries = asyncio.run(run_bench(settings, levels, warmup, on_level=_progress))
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    if output_format == "json":
        click.echo(json.dumps(report_dict(settings, summaries)))
    else:
        click.echo(render_table(settings, summaries))
    if any(summary.errors for summary in summaries):
        sys.exit(1)
