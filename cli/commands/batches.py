"""The ``score`` command: a Parquet file scored through the gateway's batch API, or in this process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from batcomputer.files.client import Client
from batcomputer.files.storage import local_location
from cli.context import Context, pass_context


@click.command()
@click.argument("model")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--local", is_flag=True, help="Score in this process, without Redis or the gateway")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the job and download its output")
@click.option("--columns", default=None, help="Input columns the output keeps, comma-separated (default: all)")
@click.option("--version", "version", default=None, help="Model version (default: the production alias)")
@pass_context
def score(ctx: Context, model: str, source: Path, target: Path, local: bool, wait: bool, columns: str | None,
          version: str | None) -> None:
    """Score a Parquet file into TARGET: through the gateway (BATCOMPUTER_API_URL), or --local."""
    # heavy: imported when the command runs
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not source.is_file():
        raise click.BadParameter(f"there is no file at {source}", param_hint="SOURCE")
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} rows/s"), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    if local:
        # heavy: imported when the command runs
        import pyarrow.parquet as pq

        from worker.parquet.runner import score_file

        bundle = ctx.registry.bundle(model, version, pipeline=True)
        try:
            total = pq.ParquetFile(source).metadata.num_rows
        except Exception:  # score_file says what is wrong with it
            total = None
        with progress:
            task = progress.add_task(f"{bundle.ref} in-process", total=total, rate="-")
            rows, failed = score_file(bundle, local_location(source), local_location(target),
                                      ctx.settings.batch_chunk_rows, wanted,
                                      progress=lambda n: progress.update(task, advance=n))
        click.echo(f"{rows:,} rows scored by {bundle.ref} ({failed:,} failed: see error_code) -> {target}")
        return
    client = Client(ctx.settings.api_url, api_key=ctx.settings.api_key)
    job = client.submit_file(model, source, wanted, version)
    if not wait:
        click.echo(f"batch {job['id']} accepted; follow it at {ctx.settings.api_url}/api/jobs/{job['id']}")
        return

    with progress:
        task = progress.add_task(f"batch {job['id'][:8]}", total=None, rate="-")

        def show(found: dict[str, Any]) -> None:
            rate = found.get("rows_per_second")
            progress.update(task, total=found.get("rows_total") or None, completed=found.get("rows_done", 0),
                            rate=f"{rate:,.0f}" if rate else "-", description=f"batch {job['id'][:8]} {found['state']}")

        job = client.follow(job["id"], show)
    if job["state"] != "succeeded":
        error = job.get("error") or {}
        click.echo(f"error: batch {job['id']} {job['state']}: {error.get('detail', '')}", err=True)
        sys.exit(1)
    client.download(job["id"], target)
    click.echo(f"{job['rows_total']:,} rows scored by {job['model']}@{job['version']} "
               f"({job['rows_failed']:,} failed: see error_code) -> {target}")
