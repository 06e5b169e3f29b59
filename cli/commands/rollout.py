"""The rollout commands: `rollout status` (production, the canary, the guards' watch of production's latest
move) and `rollout canary` (send a share of unpinned traffic to another version, or stop)."""

from __future__ import annotations

import getpass
from typing import Any

import click

from batcomputer.models.guard import Guard
from batcomputer.models.rollout import CanaryStore
from cli.context import Context, pass_context, table


def _redis(ctx: Context) -> Any:
    from batcomputer.jobqueue.connection import redis_client

    return redis_client(ctx.settings)


@click.group()
def rollout() -> None:
    """Safe rollout: the canary and guarded promotion."""


@rollout.command()
@click.argument("model")
@pass_context
def status(ctx: Context, model: str) -> None:
    """Production, the canary, and the guards watching production's latest move of MODEL."""
    client = _redis(ctx)
    alias = ctx.settings.default_alias
    canary = CanaryStore(client, ctx.settings.key_prefix).get(model)
    production = ctx.registry.resolve(model, None, alias)
    click.echo(f"{model}: {alias} {production}; canary "
               + (f"{canary.version} at {canary.percent:g}%, {canary.state}"
                  + (f", steps {', '.join(f'{x:g}' for x in canary.steps)}" if canary.steps else "")
                  + (f": {canary.reason}" if canary.reason else "") + f" (set by {canary.by} {canary.at})"
                  if canary else "none"))
    watch = Guard(client, ctx.settings.key_prefix, ctx.registry, alias).watch(model)
    shown = watch if watch and watch.get("state") else (watch or {}).get("last")
    if not shown:
        click.echo("no move of production watched yet")
        return
    move = shown.get("move") or {}
    click.echo(f"move {shown['previous']} -> {shown['version']} by {move.get('by')} ({move.get('reason')!r}): "
               f"{shown['state']} after {shown.get('jobs', 0)} job(s)"
               + (f"; {shown['reason']}" if shown.get("reason") else ""))
    if shown.get("guards"):
        click.echo(table([[g["guard"], f"{g['old']:.4f}", f"{g['new']:.4f}", f"{g['limit']:.4f}"]
                          for g in shown["guards"]], ["guard", "old", "new", "limit"]))


@rollout.command()
@click.argument("model")
@click.argument("version", type=int, required=False)
@click.option("--percent", type=click.FloatRange(0, 100, min_open=True, max_open=True), default=10.0,
              show_default=True, help="The share of unpinned jobs and /api/predict calls it takes")
@click.option("--steps", default="", help="Percents it advances to while its guards hold, e.g. 50,100 (100: it "
              "becomes production)")
@click.option("--window-jobs", type=click.IntRange(min=1), default=None,
              help="The canary's jobs judged at each step [default: BATCOMPUTER_GUARD_JOBS]")
@click.option("--off", is_flag=True, help="End the canary: all unpinned traffic to production")
@pass_context
def canary(ctx: Context, model: str, version: int | None, percent: float, steps: str, window_jobs: int | None,
           off: bool) -> None:
    """Send a share of MODEL's unpinned traffic to VERSION (sticky by the record's key), or stop (--off)."""
    store = CanaryStore(_redis(ctx), ctx.settings.key_prefix)
    if off:
        click.echo(f"{model}: canary ended" if store.clear(model) else f"{model}: no canary")
        return
    if version is None:
        raise click.UsageError("give the VERSION, or --off")
    ctx.registry.entry(model, version)  # it must exist
    if version == ctx.registry.resolve(model, None, ctx.settings.default_alias):
        raise click.UsageError(f"version {version} is already {ctx.settings.default_alias}")
    try:
        planned = [float(step) for step in steps.split(",") if step.strip()]
    except ValueError:
        raise click.UsageError(f"--steps {steps!r}: give percents separated by commas, e.g. 50,100") from None
    if planned and (planned != sorted(set(planned)) or planned[0] <= percent or planned[-1] > 100):
        raise click.UsageError("--steps must be increasing percents above --percent, up to 100")
    set_ = store.set(model, version, percent, getpass.getuser(), planned,
                     (window_jobs or ctx.settings.guard_jobs) if planned else 0)
    click.echo(f"{model}: version {set_.version} takes {set_.percent:g}% of unpinned jobs and /api/predict calls"
               + (f", then {', '.join(f'{x:g}%' for x in planned)} each after {set_.window_jobs} of its jobs with "
                  f"its guards holding" if planned else ""))
