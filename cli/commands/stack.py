"""The service commands: ``worker``, ``api`` (the gateway under gunicorn), ``up`` (the local stack), ``redis-url``."""

from __future__ import annotations

import ipaddress
import os
import resource
import sys

import click

from batcomputer.apikeys import KeyRing
from batcomputer.errors import ConfigurationError
from batcomputer.logs import configure_logging
from batcomputer.models.registry_store import is_local
from batcomputer.settings import Settings, per_core
from cli.context import Context, pass_context

THREADS = 64  # per gateway process, with threaded workers (a registry read over the network)


def check_exposure(settings: Settings, host: str) -> None:
    """The local profile has no authentication: it serves the loopback interface only. The production
    profile needs keys before it serves anything."""
    if settings.profile == "local":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigurationError(f"the local profile has no authentication and binds loopback only, not "
                                     f"{host!r}; set BATCOMPUTER_PROFILE=production (with API keys) to serve others")
    elif not KeyRing.from_settings(settings).entries():
        raise ConfigurationError("the production profile needs API keys: `batcomputer keys create NAME --scope admin`")


def gunicorn_command(host: str, port: int, workers: int, connections: int, access_log: bool = False,
                     threaded: bool = False) -> list[str]:
    """The gateway under gunicorn: gevent workers, or threaded ones (see ``api.server``)."""
    worker = ["api.server.ThreadedProblemWorker", "--threads", str(THREADS)] if threaded else \
        ["api.server.ProblemWorker", "--worker-connections", str(connections)]
    return [sys.executable, "-m", "gunicorn", "--worker-class", *worker, "--workers", str(workers),
            "--bind", f"{host}:{port}", "--no-control-socket", "--graceful-timeout", "20",
            *(["--access-logfile", "-"] if access_log else []), "api.app:create_app()"]


def raise_open_files(needed: int) -> None:
    """Let this process (and what it execs) hold ``needed`` open files, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@click.command()
@click.option("--queues", default="records", show_default=True, help="Comma-separated: records, bulk")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--metrics-port", type=int, default=None,
              help="Port of this worker's /metrics (default BATCOMPUTER_WORKER_METRICS_PORT; 0: none)")
def worker(queues: str, loglevel: str, metrics_port: int | None) -> None:
    """Start a supervised Celery worker; SIGTERM lets in-flight work finish (or it is requeued)."""
    # heavy: imported when the command runs
    from worker.metrics import node_name, serve_metrics
    from worker.supervisor import supervise

    settings = Settings.from_env()  # refuse bad settings before starting anything
    configure_logging(settings, loglevel)
    node = node_name(queues.replace(",", "+"))
    serve_metrics(settings, node, metrics_port)
    sys.exit(supervise([sys.executable, "-m", "worker", "--queues", queues, "--loglevel", loglevel, "--node", node]))


@click.command()
@click.option("--host", default=None, help="Bind address (default BATCOMPUTER_API_HOST)")
@click.option("--port", default=None, type=int, help="Port (default BATCOMPUTER_API_PORT, 8000)")
@click.option("--workers", default=None, type=int, help="Processes (default BATCOMPUTER_API_WORKERS: one per core)")
@click.option("--access-log", is_flag=True, help="Log every request to stdout (costs ~5% of the gateway's CPU)")
@pass_context
def api(ctx: Context, host: str | None, port: int | None, workers: int | None, access_log: bool) -> None:
    """Start the gateway under gunicorn (gevent workers: waiting and slow clients never pin a thread)."""
    from batcomputer.jobqueue.connection import redis_url  # heavy: imported when the command runs (redis)

    redis_url(ctx.settings)
    check_exposure(ctx.settings, host or ctx.settings.api_host)
    processes = workers or per_core(ctx.settings.api_workers)
    raise_open_files(processes * ctx.settings.api_connections + 1024)
    command = gunicorn_command(host or ctx.settings.api_host, port or ctx.settings.api_port, processes,
                               ctx.settings.api_connections, access_log, threaded=not is_local(ctx.settings.registry))
    os.execv(command[0], command)


@click.command()
@click.option("--port", default=None, type=int, help="Gateway port (default BATCOMPUTER_API_PORT, 8000)")
@click.option("--flower", "flower_port", type=int, default=None, flag_value=5555, is_flag=False,
              help="Also start Flower (pip extra `ops`) on this port (5555 when given without a value)")
@pass_context
def up(ctx: Context, port: int | None, flower_port: int | None) -> None:
    """Run the whole stack locally: Redis, record and bulk workers, the gateway; Ctrl-C stops it all."""
    from cli.stack import run_stack  # heavy: imported when the command runs (redis)

    sys.exit(run_stack(ctx.settings, port or ctx.settings.api_port, report=click.echo, flower_port=flower_port))


@click.command("redis-url")
@pass_context
def redis_url_command(ctx: Context) -> None:
    """Print the Redis URL the commands use: BATCOMPUTER_REDIS_URL, or that of the running `batcomputer up`."""
    from batcomputer.jobqueue.connection import redis_url  # heavy: imported when the command runs (redis)

    click.echo(redis_url(ctx.settings))
