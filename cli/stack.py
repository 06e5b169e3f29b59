"""The local stack behind ``batcomputer up``: Redis, record and bulk workers and the gateway, as processes."""

from __future__ import annotations

import importlib.util
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from batcomputer.jobqueue.connection import record_address
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings, per_core
from cli.launchers.prefect_server import ADDRESS_FILE, PrefectServer, prefect_env, start_prefect_server
from cli.launchers.redis_server import LocalRedis, ensure_redis

Report = Callable[[str], None]
BOOT_MODELS = ("crime", "titanic")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


PREFECT_PORT = 4200


def prefect_port(api_url: str | None) -> int:
    """The port `up` starts its Prefect server on: that of BATCOMPUTER_PREFECT_API_URL, else 4200."""
    from urllib.parse import urlsplit

    return (urlsplit(api_url).port if api_url else None) or PREFECT_PORT


def seed_registry(settings: Settings, env: dict[str, str], report: Report) -> None:
    """Fetch the data and train the bundled models when the registry holds none."""
    if Registry.from_settings(settings).models():
        return
    report("the registry is empty: fetching data and training " + ", ".join(BOOT_MODELS))
    subprocess.run(_cli("data", "fetch"), env=env, check=True)
    for model in BOOT_MODELS:
        subprocess.run(_cli("train", model, "--promote"), env=env, check=True)


FLOWER_USER = "admin"


def flower_command(port: int, host: str) -> list[str]:
    """Flower on the workers' broker and key prefix (``worker.celery_app``): the same command as compose's."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower", f"--port={port}",
            f"--address={host}"]


def run_stack(settings: Settings, port: int, report: Report = print, flower_port: int | None = None) -> int:
    state = Path(settings.state_dir)
    env = dict(os.environ)
    seed_registry(settings, env, report)
    redis: LocalRedis = ensure_redis(settings.redis_url, state / "redis")
    report(f"redis: {redis.url} ({redis.kind})")
    env["BATCOMPUTER_REDIS_URL"] = redis.url
    record_address(settings.state_dir, redis.url)  # `batcomputer jobs`, `stream`, `celery -A ...` find it there
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False
    prefect: PrefectServer | None = None
    if settings.prefect:
        home = (state / "prefect").resolve()
        prefect = start_prefect_server(home, prefect_port(settings.prefect_api_url))
        (home / ADDRESS_FILE).write_text(prefect.api_url)
        env.update(prefect_env(home, prefect.api_url))
        env["BATCOMPUTER_PREFECT_API_URL"] = prefect.api_url
        report(f"prefect: {prefect.ui_url} (SQLite under {home})")

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        record_workers = per_core(settings.record_workers)  # one Python process scores on one core
        taken = itertools.count()  # each worker's /metrics on a port of its own, counting up from the setting

        def metrics_port() -> str:
            return f"--metrics-port={settings.worker_metrics_port + next(taken) if settings.worker_metrics_port else 0}"

        roles = [*[(f"record worker {n + 1}", _cli("worker", "--queues", "records", metrics_port()))
                   for n in range(record_workers)],
                 ("bulk worker", _cli("worker", "--queues", "bulk", metrics_port())),
                 ("gateway", _cli("api", "--port", str(port)))]
        if prefect is not None:
            roles.append(("flow runner", _cli("flows", "serve")))
        flower_password = ""
        if flower_port is not None:
            if importlib.util.find_spec("flower") is None:
                report("Flower is not installed: pip install 'batcomputer[ops]' (or flower)")
                return 1
            # Flower's API can revoke and kill tasks: never without a password, even on loopback, where a web
            # page the operator visits could post to it (the environment, not the command line, carries it).
            flower_password = settings.flower_password or secrets.token_urlsafe(12)
            env["FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{flower_password}"
            env.pop("FLOWER_UNAUTHENTICATED_API", None)
            roles.append(("flower", flower_command(flower_port, settings.metrics_host)))
        registry = Registry.from_settings(settings)
        for model in registry.models():  # one stream consumer per served model
            if settings.default_alias in registry.aliases(model):
                roles.append((f"stream consumer ({model})", _cli("stream", model, metrics_port())))
        for name, command in roles:
            processes.append((name, subprocess.Popen(command, env=env, start_new_session=True)))
        base = f"http://{settings.api_host}:{port}"
        deadline = time.monotonic() + 60
        while not stopping and not _ready(f"{base}/readyz"):
            if time.monotonic() > deadline or any(p.poll() is not None for _, p in processes):
                report("the stack did not become ready; stopping")
                return 1
            time.sleep(0.2)
        if not stopping:
            report(f"Batcomputer is up:\n  web      {base}/\n  gateway  {base}/api/models\n  health   {base}/readyz\n"
                   f"  metrics  {base}/metrics (each worker's own from port {settings.worker_metrics_port} up)\n"
                   f"  try      curl -X POST '{base}/api/models/crime/jobs?wait=5' -H 'Content-Type: "
                   "application/json' -d '{\"force\": \"West Yorkshire Police\", \"crime\": \"Burglary\", "
                   "\"month\": 10}'\n" + (f"  prefect  {prefect.ui_url} (retrain: batcomputer retrain crime)\n"
                                             if prefect else "")
                   + (f"  flower   http://{settings.metrics_host}:{flower_port}/ (user {FLOWER_USER}, password "
                      + ("BATCOMPUTER_FLOWER_PASSWORD" if settings.flower_password else flower_password) + ")\n"
                      if flower_port is not None else "")
                   + "Ctrl-C stops everything.")
        while not stopping:
            for name, process in processes:
                if process.poll() is not None:
                    report(f"the {name} exited with code {process.returncode}; stopping")
                    stopping = True
            time.sleep(0.2)
        return 0
    finally:
        for _, process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                report(f"the {name} did not stop in 30 s; killing it")
                os.killpg(process.pid, signal.SIGKILL)
        if prefect is not None:  # after the flow runner: once the server is gone, served flows ignore SIGTERM
            prefect.stop()
        record_address(settings.state_dir, None)
        if redis.kind != "configured":
            redis.stop()
        report("stopped")
