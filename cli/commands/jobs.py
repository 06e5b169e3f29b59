"""The ``jobs`` group: list dead jobs, and replay one once its cause is fixed."""

from __future__ import annotations

from typing import Any

import click

from batcomputer.settings import Settings
from cli.context import Context, pass_context, table


@click.group()
def jobs() -> None:
    """Dead jobs (their worker was lost too often): list them, and replay one once its cause is fixed."""


def _job_store(settings: Settings) -> Any:
    # heavy: imported when the command runs (redis)
    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.jobqueue.jobs import JobStore

    return JobStore.from_settings(redis_client(settings), settings)


@jobs.command("dead")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--ids", "ids_only", is_flag=True, help="Only their ids, one per line (for scripts)")
@pass_context
def jobs_dead(ctx: Context, limit: int, ids_only: bool) -> None:
    """Dead jobs, most recent first, with why they died."""
    found, _ = _job_store(ctx.settings).dead.page(0, limit)
    if ids_only:
        for job in found:
            click.echo(job["id"])
        return
    rows = [[j["id"], j.get("model", "-"), str(j.get("version", "-")), str(j.get("count", "-")), j.get("finished", "-"),
             str(j.get("replays", 0)), (j.get("error") or {}).get("detail", "-")] for j in found]
    click.echo(table(rows, ["id", "model", "version", "records", "died", "replays", "why"]) if rows
               else "no dead jobs")


@jobs.command("replay")
@click.argument("job_id")
@pass_context
def jobs_replay(ctx: Context, job_id: str) -> None:
    """Send a dead job again, with its records and pinned version as they were accepted."""
    job = _job_store(ctx.settings).dead.replay(job_id)
    click.echo(f"replayed {job_id}: {job['state']} on the {job.get('queue')} queue (model {job.get('model')} "
               f"version {job.get('version')})")
