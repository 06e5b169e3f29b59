"""The ``batcomputer`` root command: it registers each group's commands (``cli.commands``) and maps errors to exits."""

from __future__ import annotations

import sys

import click

from batcomputer.errors import BatcomputerError, ValidationFailed
from cli.commands.batches import score
from cli.commands.data import data
from cli.commands.flows import flows, retrain
from cli.commands.jobs import jobs
from cli.commands.keys import keys
from cli.commands.models import history, models, predict, promote, rollback, train, unpin
from cli.commands.rollout import rollout
from cli.commands.stack import api, redis_url_command, up, worker
from cli.commands.streams import stream
from cli.context import Context


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Batcomputer: train, publish and serve scikit-learn models."""
    ctx.obj = Context()


for command in (models, promote, unpin, rollback, history, predict, train, rollout,  # the registry
                data, score, stream, jobs, keys,  # data, scoring, dead jobs, API keys
                retrain, flows,  # Prefect
                worker, api, up, redis_url_command):  # the services
    cli.add_command(command)


def _report(error: BatcomputerError) -> None:
    click.echo(f"error: {error.detail}" if not isinstance(error, ValidationFailed) else "error: invalid record",
               err=True)
    if isinstance(error, ValidationFailed):
        for problem in error.problems:
            click.echo(f"  {problem['message']}", err=True)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="batcomputer", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BatcomputerError as exc:
        _report(exc)
        sys.exit(2 if exc.status < 500 else 1)
