"""The ``batcomputer`` commands: registry, data, training, scoring, keys, jobs and (lazily) the services."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from batcomputer.errors import BatcomputerError, ValidationFailed
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings


def split_ref(text: str) -> tuple[str, str | None]:
    """'crime@3' -> ('crime', '3'); 'crime@staging' -> ('crime', 'staging'); 'crime' -> ('crime', None)."""
    model, _, ref = text.partition("@")
    return model, ref or None


class Context:
    """Settings and registry, built once per command from the environment."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.from_settings(self.settings)
        return self._registry


pass_context = click.make_pass_decorator(Context)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Batcomputer: train, publish and serve scikit-learn models."""
    ctx.obj = Context()


@cli.group(invoke_without_command=True)
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
    click.echo(_table(rows, ["model", "version", "aliases", "log_loss", "roc_auc", "pr_auc", "accuracy"]))


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


@cli.command()
@click.argument("model")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="", help="Why, for the alias history")
@pass_context
def promote(ctx: Context, model: str, version: int, alias: str, reason: str) -> None:
    """Point an alias of MODEL at VERSION."""
    move = ctx.registry.set_alias(model, alias, version, reason=reason or "batcomputer promote")
    click.echo(f"{model}: {alias} {move['from'] or '-'} -> {move['to']}")


@cli.command()
@click.argument("model")
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="", help="Why, for the alias history")
@pass_context
def rollback(ctx: Context, model: str, alias: str, reason: str) -> None:
    """Move an alias of MODEL back to its previous target."""
    move = ctx.registry.rollback(model, alias, reason=reason or "batcomputer rollback")
    click.echo(f"{model}: {alias} {move['from']} -> {move['to']} (rollback)")


@cli.command()
@click.argument("model")
@click.option("--alias", default=None, help="Only this alias")
@pass_context
def history(ctx: Context, model: str, alias: str | None) -> None:
    """Every alias move of MODEL, oldest first."""
    moves = ctx.registry.history(model, alias)
    if not moves:
        click.echo(f"{model}: no alias moves yet")
        return
    click.echo(_table([[m["at"], m["alias"], str(m["from"] or "-"), str(m["to"]), m["kind"], m["by"], m["reason"]]
                       for m in moves], ["at", "alias", "from", "to", "kind", "by", "reason"]))


@cli.command()
@click.argument("ref")
@click.argument("assignments", nargs=-1)
@pass_context
def predict(ctx: Context, ref: str, assignments: tuple[str, ...]) -> None:
    """Score one record in-process: MODEL[@VERSION|@ALIAS] field=value ..."""
    from batcomputer.models.schema import parse_text_record
    from batcomputer.models.scoring import score

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


@cli.group()
def data() -> None:
    """Datasets: where they come from, and fetching them."""


@data.command("list")
def data_list() -> None:
    """List the datasets of data/sources.toml."""
    from training.datasets import load_sources

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
    from training import datasets

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
@pass_context
def data_sample(ctx: Context, model: str, target: Path, rows: int, source: str | None, seed: int) -> None:
    """Write ROWS records MODEL takes (its named fields, drawn from its data, plus a record_id column) to
    TARGET, a .parquet or .csv file: input for `batcomputer score` and the batch API."""
    from training.trainer import sample_records

    picked = sample_records(model, rows, source, Path(ctx.settings.data_dir), seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".csv":
        picked.to_csv(target, index=False)
    else:
        picked.to_parquet(target, index=False)
    click.echo(f"{target}: {rows:,} {model} records ({', '.join(picked.columns[1:])})")


@cli.command()
@click.argument("model")
@click.option("--source", default=None, help="A source name of the model's spec; for models with a file source "
              "(titanic, titanic-kaggle: not crime, whose data is a folder of monthly files) also a CSV/Parquet path "
              "or URL with that source's columns")
@click.option("--promote", is_flag=True, help="Move the production alias to the published version")
@pass_context
def train(ctx: Context, model: str, source: str | None, promote: bool) -> None:
    """Train MODEL from its spec (training/specs/MODEL.toml) and publish it to the registry."""
    from training.trainer import train as run_training

    trained = run_training(ctx.settings, model, source=source, promote=promote, report=click.echo)
    published, metrics = trained.published, trained.metrics
    state = "published as new version" if published.created else "identical to existing version"
    click.echo(f"{published.model}: {state} {published.version} (sha256 {published.sha256[:12]})")
    click.echo(f"  holdout: log_loss {metrics['log_loss']:.4f} (prior {metrics['baseline']['log_loss']:.4f}), "
               f"roc_auc {metrics['roc_auc']:.4f}, pr_auc {metrics['pr_auc']:.4f} "
               f"(base rate {metrics['baseline']['pr_auc']:.4f}), accuracy {metrics['accuracy']:.4f}")
    if trained.promoted:
        click.echo(f"  {ctx.settings.default_alias} -> {published.version}")


@cli.command()
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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not source.is_file():
        raise click.BadParameter(f"there is no file at {source}", param_hint="SOURCE")
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} rows/s"), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    if local:
        from batcomputer.files.storage import local_location
        from worker.parquet.runner import score_file

        bundle = ctx.registry.bundle(model, version, pipeline=True)
        import pyarrow.parquet as pq

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
    from batcomputer.files.client import Client

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


def use_prefect_server(settings: Settings) -> None:
    """Point this process's Prefect at PREFECT_API_URL, else BATCOMPUTER_PREFECT_API_URL, else the server a
    running `batcomputer up` started (before Prefect is imported); none of them: Prefect's temporary server."""
    import os

    from cli.launchers.prefect_server import QUIET, discover

    for name, value in QUIET.items():
        os.environ.setdefault(name, value)
    if "PREFECT_API_URL" not in os.environ:
        found = settings.prefect_api_url or discover(settings.state_dir)
        if found:
            os.environ["PREFECT_API_URL"] = found


@cli.command()
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
    from orchestration.flows import retrain as retrain_flow

    decision = retrain_flow(model=model, policy=policy, spec=spec, fetch=fetch)
    click.echo(f"{model}: version {decision['version']} ({'new' if decision['created'] else 'unchanged'}), "
               f"{'promoted' if decision['promoted'] else 'not promoted'}")
    for reason in decision["reasons"]:
        click.echo(f"  {reason}")


@cli.group()
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
    from orchestration.deployments import serve

    serve(interval, models)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("words", nargs=-1, required=True, metavar="MODEL | status MODEL")
@click.option("--metrics-port", type=int, default=None,
              help="Port of this consumer's /metrics (default BATCOMPUTER_WORKER_METRICS_PORT; 0: none)")
@pass_context
def stream(ctx: Context, words: tuple[str, ...], metrics_port: int | None) -> None:
    """Consume MODEL's input stream (run several for more throughput); `stream status MODEL`: lag, pending,
    outputs, dead letters, consumers and their rate."""
    if words[0] == "status":
        if len(words) != 2:
            raise click.UsageError("usage: batcomputer stream status MODEL")
        from batcomputer.jobqueue.connection import redis_client
        from batcomputer.jobqueue.streams import StreamStore

        store = StreamStore(redis_client(ctx.settings), ctx.settings.key_prefix, words[1], ctx.settings.stream_maxlen)
        click.echo(json.dumps(store.status(), indent=2))
        return
    if len(words) != 1:
        raise click.UsageError("usage: batcomputer stream MODEL")
    from batcomputer.logs import configure_logging
    from worker.metrics import node_name, serve_metrics
    from worker.stream_consumer import run_consumer

    configure_logging(ctx.settings)
    ctx.registry.resolve(words[0], None, ctx.settings.default_alias)  # an unknown model stops here, named
    node = node_name(f"stream-{words[0]}")
    serve_metrics(ctx.settings, node, metrics_port)
    run_consumer(ctx.settings, words[0], node)


@cli.group()
def jobs() -> None:
    """Dead jobs (their worker was lost too often): list them, and replay one once its cause is fixed."""


def _job_store(settings: Settings) -> Any:
    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.jobqueue.jobs import JobStore

    return JobStore.from_settings(redis_client(settings), settings)


@jobs.command("dead")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--ids", "ids_only", is_flag=True, help="Only their ids, one per line (for scripts)")
@pass_context
def jobs_dead(ctx: Context, limit: int, ids_only: bool) -> None:
    """Dead jobs, most recent first, with why they died."""
    found, _ = _job_store(ctx.settings).dead_jobs(0, limit)
    if ids_only:
        for job in found:
            click.echo(job["id"])
        return
    rows = [[j["id"], j.get("model", "-"), str(j.get("version", "-")), str(j.get("count", "-")), j.get("finished", "-"),
             str(j.get("replays", 0)), (j.get("error") or {}).get("detail", "-")] for j in found]
    click.echo(_table(rows, ["id", "model", "version", "records", "died", "replays", "why"]) if rows
               else "no dead jobs")


@jobs.command("replay")
@click.argument("job_id")
@pass_context
def jobs_replay(ctx: Context, job_id: str) -> None:
    """Send a dead job again, with its records and pinned version as they were accepted."""
    job = _job_store(ctx.settings).replay(job_id)
    click.echo(f"replayed {job_id}: {job['state']} on the {job.get('queue')} queue (model {job.get('model')} "
               f"version {job.get('version')})")


@cli.command("redis-url")
@pass_context
def redis_url_command(ctx: Context) -> None:
    """Print the Redis URL the commands use: BATCOMPUTER_REDIS_URL, or that of the running `batcomputer up`."""
    from batcomputer.jobqueue.connection import redis_url

    click.echo(redis_url(ctx.settings))


def check_exposure(settings: Settings, host: str) -> None:
    """The local profile has no authentication: it serves the loopback interface only. The production
    profile needs keys before it serves anything."""
    import ipaddress

    from batcomputer.apikeys import KeyRing
    from batcomputer.errors import ConfigurationError

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


@cli.group(invoke_without_command=True)
@click.pass_context
def keys(click_ctx: click.Context) -> None:
    """API keys (hashed in BATCOMPUTER_KEYS_FILE): list them, or create and revoke."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(keys_list)


@keys.command("list")
@pass_context
def keys_list(ctx: Context) -> None:
    from batcomputer.apikeys import KeyRing

    ring = KeyRing.from_settings(ctx.settings)
    rows = [[name, e.get("scope", "?"), e.get("created", "-"), "revoked " + e["revoked"] if e.get("revoked") else
             "active"] for name, e in sorted(ring.entries().items())]
    click.echo(_table(rows, ["name", "scope", "created", "state"]) if rows else f"no keys in {ring.path}")


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["score", "admin"]), default="score", show_default=True)
@pass_context
def keys_create(ctx: Context, name: str, scope: str) -> None:
    """Create a key; it is printed once, on the last line (only its hash is kept)."""
    from batcomputer.apikeys import KeyRing

    ring = KeyRing.from_settings(ctx.settings)
    token = ring.create(name, scope)
    click.echo(f"created {scope} key {name!r} in {ring.path}; keep it now, it is not shown again:")
    click.echo(token)


@keys.command("revoke")
@click.argument("name")
@pass_context
def keys_revoke(ctx: Context, name: str) -> None:
    from batcomputer.apikeys import KeyRing

    KeyRing.from_settings(ctx.settings).revoke(name)
    click.echo(f"revoked {name!r}")


@cli.command()
@click.option("--queues", default="records", show_default=True, help="Comma-separated: records, bulk")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--metrics-port", type=int, default=None,
              help="Port of this worker's /metrics (default BATCOMPUTER_WORKER_METRICS_PORT; 0: none)")
def worker(queues: str, loglevel: str, metrics_port: int | None) -> None:
    """Start a supervised Celery worker; SIGTERM lets in-flight work finish (or it is requeued)."""
    from batcomputer.logs import configure_logging
    from worker.metrics import node_name, serve_metrics
    from worker.supervisor import supervise

    settings = Settings.from_env()  # refuse bad settings before starting anything
    configure_logging(settings, loglevel)
    node = node_name(queues.replace(",", "+"))
    serve_metrics(settings, node, metrics_port)
    sys.exit(supervise([sys.executable, "-m", "worker", "--queues", queues, "--loglevel", loglevel, "--node", node]))


THREADS = 64  # per gateway process, with threaded workers (a registry read over the network)


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
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@cli.command()
@click.option("--host", default=None, help="Bind address (default BATCOMPUTER_API_HOST)")
@click.option("--port", default=None, type=int, help="Port (default BATCOMPUTER_API_PORT, 8000)")
@click.option("--workers", default=None, type=int, help="Processes (default BATCOMPUTER_API_WORKERS: one per core)")
@click.option("--access-log", is_flag=True, help="Log every request to stdout (costs ~5% of the gateway's CPU)")
@pass_context
def api(ctx: Context, host: str | None, port: int | None, workers: int | None, access_log: bool) -> None:
    """Start the gateway under gunicorn (gevent workers: waiting and slow clients never pin a thread)."""
    import os

    from batcomputer.jobqueue.connection import redis_url
    from batcomputer.models.registry_store import is_local
    from batcomputer.settings import per_core

    redis_url(ctx.settings)
    check_exposure(ctx.settings, host or ctx.settings.api_host)
    processes = workers or per_core(ctx.settings.api_workers)
    raise_open_files(processes * ctx.settings.api_connections + 1024)
    command = gunicorn_command(host or ctx.settings.api_host, port or ctx.settings.api_port, processes,
                               ctx.settings.api_connections, access_log, threaded=not is_local(ctx.settings.registry))
    os.execv(command[0], command)


@cli.command()
@click.option("--port", default=None, type=int, help="Gateway port (default BATCOMPUTER_API_PORT, 8000)")
@click.option("--flower", "flower_port", type=int, default=None, flag_value=5555, is_flag=False,
              help="Also start Flower (pip extra `ops`) on this port (5555 when given without a value)")
@pass_context
def up(ctx: Context, port: int | None, flower_port: int | None) -> None:
    """Run the whole stack locally: Redis, record and bulk workers, the gateway; Ctrl-C stops it all."""
    from cli.stack import run_stack

    sys.exit(run_stack(ctx.settings, port or ctx.settings.api_port, report=click.echo, flower_port=flower_port))


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
