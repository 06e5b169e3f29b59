"""The ``data`` group: list the datasets of data/sources.toml, fetch them, and sample model input from them."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, pass_context


@click.group()
def data() -> None:
    """Datasets: where they come from, and fetching them."""


@data.command("list")
def data_list() -> None:
    """List the datasets of data/sources.toml."""
    from training.datasets import load_sources  # heavy: imported when the command runs

    for name, src in load_sources().items():
        click.echo(f"{name}: {src['title']}\n  origin: {src['origin']}\n  licence: {src['licence']}\n"
                   f"  covers: {src['covers']}")


@data.command("fetch")
@click.argument("dataset", required=False)
@click.option("--police-month", default=None, metavar="YYYY-MM",
              help="Online: take street-level CSVs from data.police.uk's archive of this month")
@click.option("--force-name", "forces", multiple=True, default=["west-yorkshire"], show_default=True,
              help="With --police-month: force slug(s) to extract")
@pass_context
def data_fetch(ctx: Context, dataset: str | None, police_month: str | None, forces: tuple[str, ...]) -> None:
    """Fetch DATASET (default: all) into BATCOMPUTER_DATA_DIR, verifying checksums; idempotent."""
    from training import datasets  # heavy: imported when the command runs

    target = Path(ctx.settings.data_dir)
    if police_month:
        datasets.fetch_police_archive(police_month, list(forces), target, report=click.echo)
        return
    for name in [dataset] if dataset else list(datasets.load_sources()):
        datasets.fetch(name, target, report=click.echo)


@data.command("sample")
@click.argument("model")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rows", type=click.IntRange(1), default=10_000, show_default=True, help="How many records")
@click.option("--source", default=None, help="A source name of the model's spec, or for a file source its path "
              "(default: the first source with a dataset)")
@click.option("--seed", type=int, default=0, show_default=True, help="Which rows are drawn")
@click.option("--outcomes", is_flag=True, help="Add each record's real outcome (an `outcome` column of labels): "
              "what `bench/replay.py --outcomes` sends back")
@pass_context
def data_sample(ctx: Context, model: str, target: Path, rows: int, source: str | None, seed: int,
                outcomes: bool) -> None:
    """Write ROWS records MODEL takes (its named fields, drawn from its data, plus a record_id column) to
    TARGET, a .parquet or .csv file: input for `batcomputer score` and the batch API."""
    from training.trainer import sample_records  # heavy: imported when the command runs

    picked = sample_records(model, rows, source, Path(ctx.settings.data_dir), seed, outcomes)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".csv":
        picked.to_csv(target, index=False)
    else:
        picked.to_parquet(target, index=False)
    click.echo(f"{target}: {rows:,} {model} records ({', '.join(picked.columns[1:])})")
