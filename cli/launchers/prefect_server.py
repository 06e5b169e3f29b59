"""A Prefect server as a process, for ``batcomputer up`` and the tests: SQLite under the state folder by
default, PostgreSQL when given a database URL, telemetry and analytics off, started and stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def prefect_env(home: Path, api_url: str | None = None, database_url: str | None = None) -> dict[str, str]:
    """What every Prefect process of ours gets: its home, no telemetry, the server's API (and database)."""
    env = {**QUIET, "PREFECT_HOME": str(home)}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


ADDRESS_FILE = "api_url"  # where `up` leaves its server's API URL, for commands run beside it


def discover(state_dir: str) -> str | None:
    """The API URL of the Prefect server a running ``batcomputer up`` started, if it answers."""
    try:
        url = (Path(state_dir) / "prefect" / ADDRESS_FILE).read_text().strip()
    except OSError:
        return None
    return url if url and healthy(url) else None


@dataclass
class PrefectServer:
    process: subprocess.Popen[bytes]
    api_url: str
    ui_url: str

    def stop(self, timeout: float = 30) -> None:
        """Stop the server (stop anything served against it first: once the server is gone, served flows
        ignore SIGTERM)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_prefect_server(home: Path, port: int, database_url: str | None = None, ui: bool = True,
                         log: Path | None = None, timeout: float = 120) -> PrefectServer:
    """Start ``prefect server start`` on 127.0.0.1:``port`` and wait until its API answers."""
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **prefect_env(home, None, database_url), "PREFECT_SERVER_UI_ENABLED": str(ui).lower(),
           "PREFECT_UI_API_URL": api_url}
    env.pop("PREFECT_API_URL", None)
    output = (log or home / "server.log").open("ab")
    prefect = str(Path(sys.executable).parent / "prefect")
    process = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                               stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    server = PrefectServer(process, api_url, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while not healthy(api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the Prefect server did not start (see {log or home / 'server.log'})")
        time.sleep(0.3)
    return server
