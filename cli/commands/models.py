"""The registry commands: list and show models, move aliases (promote, rollback, history), predict, train."""

from __future__ import annotations

import json
from typing import Any

import click

from batcomputer.errors import ValidationFailed
from batcomputer.jobqueue.keyspace import DEFAULT_ALIAS
from batcomputer.models.schema import parse_text_record
from batcomputer.models.scoring import score
from cli.context import Context, pass_context, table


def split_ref(text: str) -> tuple[str, str | None]:
    """'crime@3' -> ('crime', '3'); 'crime@staging' -> ('crime', 'staging'); 'crime' -> ('crime', None)."""
    model, _, ref = text.partition("@")
    return model, ref or None


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


@click.group(invoke_without_command=True)
@pass_context
@click.pass_context
def models(click_ctx: click.Context, ctx: Context) -> None:
    """List models with their versions, aliases and headline holdout metrics."""
    if click_ctx.invoked_subcommand:
        return
    rows = []
    for model in ctx.registry.models():
        aliases = ctx.registry.aliases(model)
        by_version: dict[int, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        for version in ctx.registry.versions(model):
            metrics = ctx.registry.bundle(model, version).metrics
            rows.append([model, str(version), ",".join(sorted(by_version.get(version, []))) or "-",
                         _figure(metrics.get("log_loss")), _figure(metrics.get("roc_auc")),
                         _figure(metrics.get("pr_auc")), _figure(metrics.get("accuracy"))])
    if not rows:
        click.echo(f"no models in {ctx.registry.store.url}; train one with `batcomputer train crime --promote`")
        return
    click.echo(table(rows, ["model", "version", "aliases", "log_loss", "roc_auc", "pr_auc", "accuracy"]))


@models.command("show")
@click.argument("ref")
@pass_context
def models_show(ctx: Context, ref: str) -> None:
    """Show a model's schema, metrics and manifest: MODEL, MODEL@VERSION or MODEL@ALIAS."""
    model, version_or_alias = split_ref(ref)
    bundle = ctx.registry.bundle(model, version_or_alias)
    click.echo(json.dumps({"model": model, "version": bundle.version, "sha256": bundle.sha256,
                           "aliases": ctx.registry.aliases(model), "schema": bundle.schema.to_json(),
                           "metrics": bundle.metrics, "manifest": bundle.manifest}, indent=2))


def alias_move(command: Any) -> Any:
    """The options every alias move takes: which alias, and why (for its history)."""
    command = click.option("--reason", default="", help="Why, for the alias history")(command)
    return click.option("--alias", default=DEFAULT_ALIAS, show_default=True)(command)


@click.command()
@click.argument("model")
@click.argument("version", type=int)
@alias_move
@click.option("--pin", is_flag=True, help="Hold it there: retraining never moves it until `batcomputer unpin`")
@pass_context
def promote(ctx: Context, model: str, version: int, alias: str, reason: str, pin: bool) -> None:
    """Point an alias of MODEL at VERSION."""
    move = ctx.registry.set_alias(model, alias, version, reason=reason or "batcomputer promote", pin=pin or None)
    click.echo(f"{model}: {alias} {move['from'] or '-'} -> {move['to']}" + (" (pinned)" if move.get("pinned") else ""))


@click.command()
@click.argument("model")
@alias_move
@pass_context
def unpin(ctx: Context, model: str, alias: str, reason: str) -> None:
    """Let retraining move an alias of MODEL again (it stays where it points)."""
    move = ctx.registry.unpin(model, alias, reason=reason or "batcomputer unpin")
    click.echo(f"{model}: {alias} {move['to']} unpinned")


@click.command()
@click.argument("model")
@alias_move
@pass_context
def rollback(ctx: Context, model: str, alias: str, reason: str) -> None:
    """Move an alias of MODEL back to its previous target."""
    move = ctx.registry.rollback(model, alias, reason=reason or "batcomputer rollback")
    click.echo(f"{model}: {alias} {move['from']} -> {move['to']} (rollback)")


@click.command()
@click.argument("model")
@click.option("--alias", default=None, help="Only this alias")
@pass_context
def history(ctx: Context, model: str, alias: str | None) -> None:
    """Every alias move of MODEL, oldest first."""
    moves = ctx.registry.history(model, alias)
    if not moves:
        click.echo(f"{model}: no alias moves yet")
        return
    click.echo(table([[m["at"], m["alias"], str(m["from"] or "-"), str(m["to"]), m["kind"], m["by"], m["reason"]]
                      for m in moves], ["at", "alias", "from", "to", "kind", "by", "reason"]))


@click.command()
@click.argument("ref")
@click.argument("assignments", nargs=-1)
@pass_context
def predict(ctx: Context, ref: str, assignments: tuple[str, ...]) -> None:
    """Score one record in-process: MODEL[@VERSION|@ALIAS] field=value ..."""
    model, version_or_alias = split_ref(ref)
    texts: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.UsageError(f"{item!r} is not field=value")
        texts[name] = value
    bundle = ctx.registry.bundle(model, version_or_alias or ctx.settings.default_alias, pipeline=True)
    clean, problems = parse_text_record(bundle.schema, texts)
    if problems:
        raise ValidationFailed(problems)
    result = score(bundle, [clean])[0]
    click.echo(json.dumps({"model": model, "version": bundle.version, **result}, indent=2))


@click.command()
@click.argument("model")
@click.option("--source", default=None, help="A source name of the model's spec; for models with a file source "
              "(titanic, titanic-kaggle: not crime, whose data is a folder of monthly files) also a CSV/Parquet path "
              "or URL with that source's columns")
@click.option("--promote", is_flag=True, help="Move the production alias to the published version")
@pass_context
def train(ctx: Context, model: str, source: str | None, promote: bool) -> None:
    """Train MODEL from its spec (training/specs/MODEL.toml) and publish it to the registry."""
    from training.trainer import train as run_training  # heavy: imported when the command runs

    trained = run_training(ctx.settings, model, source=source, promote=promote, report=click.echo)
    published, metrics = trained.published, trained.metrics
    state = "published as new version" if published.created else "identical to existing version"
    click.echo(f"{published.model}: {state} {published.version} (sha256 {published.sha256[:12]})")
    click.echo(f"  holdout: log_loss {metrics['log_loss']:.4f} (prior {metrics['baseline']['log_loss']:.4f}), "
               f"roc_auc {metrics['roc_auc']:.4f}, pr_auc {metrics['pr_auc']:.4f} "
               f"(base rate {metrics['baseline']['pr_auc']:.4f}), accuracy {metrics['accuracy']:.4f}")
    if trained.promoted:
        click.echo(f"  {ctx.settings.default_alias} -> {published.version}")
