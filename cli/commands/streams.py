"""The ``stream`` command: consume a model's input stream, or report its status."""

from __future__ import annotations

import json
import sys

import click

from batcomputer.logs import configure_logging
from cli.context import Context, pass_context


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("words", nargs=-1, required=True, metavar="MODEL | status MODEL")
@click.option("--metrics-port", type=int, default=None,
              help="Port of this consumer's /metrics (default BATCOMPUTER_WORKER_METRICS_PORT; 0: none)")
@click.option("--unsupervised", is_flag=True, hidden=True, help="Consume in this process (its supervisor's child)")
@pass_context
def stream(ctx: Context, words: tuple[str, ...], metrics_port: int | None, unsupervised: bool) -> None:
    """Consume MODEL's input stream (run several for more throughput); `stream status MODEL`: lag, pending,
    outputs, dead letters, consumers and their rate. The consumer is a supervised child process: one that
    dies, or exits because scoring would not stop past its time limit, is started again."""
    if words[0] == "status":
        if len(words) != 2:
            raise click.UsageError("usage: batcomputer stream status MODEL")
        # heavy: imported when the command runs (redis)
        from batcomputer.jobqueue.connection import redis_client
        from batcomputer.jobqueue.streams import StreamStore

        store = StreamStore(redis_client(ctx.settings), ctx.settings.key_prefix, words[1], ctx.settings.stream_maxlen)
        click.echo(json.dumps(store.status(), indent=2))
        return
    if len(words) != 1:
        raise click.UsageError("usage: batcomputer stream MODEL")
    # heavy: imported when the command runs
    from worker.metrics import node_name, serve_metrics
    from worker.stream_consumer import run_consumer

    configure_logging(ctx.settings)
    ctx.registry.resolve(words[0], None, ctx.settings.default_alias)  # an unknown model stops here, named
    if not unsupervised:
        from worker.supervisor import supervise

        port = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
        sys.exit(supervise([sys.executable, "-m", "cli", "stream", words[0], *port, "--unsupervised"]))
    node = node_name(f"stream-{words[0]}")
    serve_metrics(ctx.settings, node, metrics_port)
    run_consumer(ctx.settings, words[0], node)
