"""The Prefect side: ``retrain`` (the retrain flow, once, now) and the ``flows`` group that serves the deployments."""

from __future__ import annotations

import os

import click

from batcomputer.settings import Settings
from cli.context import Context, pass_context
from cli.launchers.prefect_server import QUIET, discover


def use_prefect_server(settings: Settings) -> None:
    """Point this process's Prefect at PREFECT_API_URL, else BATCOMPUTER_PREFECT_API_URL, else the server a
    running `batcomputer up` started (before Prefect is imported); none of them: Prefect's temporary server."""
    for name, value in QUIET.items():
        os.environ.setdefault(name, value)
    if "PREFECT_API_URL" not in os.environ:
        found = settings.prefect_api_url or discover(settings.state_dir)
        if found:
            os.environ["PREFECT_API_URL"] = found


@click.command()
@click.argument("model")
@click.option("--policy", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="auto: promote only when not worse than production by the spec's margin")
@click.option("--spec", default=None, help="Another spec file of the same model")
@click.option("--fetch/--no-fetch", default=True, show_default=True, help="Fetch the data first")
@pass_context
def retrain(ctx: Context, model: str, policy: str, spec: str | None, fetch: bool) -> None:
    """Run the retrain flow once, now: on the Prefect server of PREFECT_API_URL, else the one `batcomputer up`
    started, else a temporary one."""
    use_prefect_server(ctx.settings)
    from orchestration.flows import retrain as retrain_flow  # heavy, and only after use_prefect_server

    decision = retrain_flow(model=model, policy=policy, spec=spec, fetch=fetch)
    click.echo(f"{model}: version {decision['version']} ({'new' if decision['created'] else 'unchanged'}), "
               f"{'promoted' if decision['promoted'] else 'not promoted'}")
    for reason in decision["reasons"]:
        click.echo(f"  {reason}")


@click.group()
def flows() -> None:
    """Prefect deployments of the flows."""


@flows.command("serve")
@click.option("--interval", type=float, default=None, help="Retrain every N seconds instead of monthly")
@click.option("--model", "models", multiple=True, default=["crime"], show_default=True)
@pass_context
def flows_serve(ctx: Context, interval: float | None, models: tuple[str, ...]) -> None:
    """Serve the deployments (scheduled retrain, on-demand promote/rollback/score-batch) to PREFECT_API_URL, else
    to the Prefect server `batcomputer up` started."""
    use_prefect_server(ctx.settings)
    from orchestration.deployments import serve  # heavy, and only after use_prefect_server

    serve(interval, models)
