"""`batcomputer up` (what `make up` runs): Redis, workers and gateway from one command; Ctrl-C stops it all."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

from batcomputer.redis_server import reachable
from batcomputer.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import ROOT, free_port, settings_env


def test_up_starts_the_stack_and_ctrl_c_stops_it(trained_registry: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = settings_env(Settings(registry=trained_registry.registry, data_dir=trained_registry.data_dir,
                                state_dir=str(tmp_path / "state"), key_prefix="bct-up:"))
    assert "BATCOMPUTER_REDIS_URL" not in env  # up finds redis-server on PATH and starts its own
    process = subprocess.Popen([str(Path(sys.executable).parent / "batcomputer"), "up", "--port", str(port)],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True).start()
    seen: list[str] = []
    try:
        while not any("Batcomputer is up" in line for line in seen):
            seen.append(lines.get(timeout=90))
        redis_url = next(line.split()[1] for line in seen if line.startswith("redis: "))
        assert "(redis-server)" in "".join(seen)
        base = f"http://127.0.0.1:{port}"
        record = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
        response = requests.post(f"{base}/api/models/crime/jobs", json=record, timeout=10)
        assert response.status_code == 202
        job = requests.get(f"{base}{response.headers['Location']}?wait=20", timeout=30).json()
        bundle = Registry.from_settings(trained_registry).bundle("crime", "production")
        assert job["state"] == "succeeded"
        assert (job["version"], job["bundle_sha256"]) == (bundle.version, bundle.sha256)
        assert set(job["results"][0]) == {"caughtProb", "notCaughtProb", "label"}
        per_core = os.cpu_count() or 1  # record worker processes and bulk scoring processes: one per core
        assert requests.get(f"{base}/readyz", timeout=10).json()["workers"] == {"records": per_core, "bulk": per_core}
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    assert not reachable(redis_url)
