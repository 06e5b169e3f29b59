"""The ``jobs`` group: show a job, list dead jobs, and replay one once its cause is fixed."""

from __future__ import annotations

from typing import Any

import click

from batcomputer.settings import Settings
from cli.context import Context, pass_context, table


@click.group()
def jobs() -> None:
    """Jobs: show one; dead jobs (their worker was lost too often, or their time limit stopped them): list
    them, and replay one once its cause is fixed."""


def _job_store(settings: Settings) -> Any:
    # heavy: imported when the command runs (redis)
    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.jobqueue.jobs import JobStore

    return JobStore.from_settings(redis_client(settings), settings)


@jobs.command("get")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The whole job as JSON (results included)")
@pass_context
def jobs_get(ctx: Context, job_id: str, as_json: bool) -> None:
    """A job's state, model, version, attempts and times; why it failed (a timeout names its limit)."""
    import json

    job = _job_store(ctx.settings).get(job_id)
    if as_json:
        click.echo(json.dumps({k: (v.parse() if k == "results" else v) for k, v in job.items()}, indent=2))
        return
    shown = ("state", "model", "version", "kind", "count", "queue", "attempts", "timeout", "created", "started",
             "finished", "rows_done", "rows_failed", "rows_total")
    rows = [[name, str(job[name])] for name in shown if job.get(name) is not None]
    error = job.get("error")
    if error:
        rows.append(["error", f"{error.get('code')}: {error.get('detail', '')}"])
    if job.get("replayable"):
        rows.append(["replay", f"batcomputer jobs replay {job_id}"])
    click.echo(table(rows, ["job", job_id]))


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
