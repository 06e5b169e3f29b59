"""`batcomputer up` (what `make up` runs): Redis, workers and gateway from one command; Ctrl-C stops it all."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from batcomputer.jobqueue.connection import reachable
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import ROOT, free_port, settings_env, wait_until


def test_up_starts_the_stack_and_ctrl_c_stops_it(trained_registry: Settings, tmp_path: Path) -> None:
    port, prefect_port, flower_port = free_port(), free_port(), free_port()
    registry_copy = tmp_path / "registry"  # the retrain below must not move the session registry's aliases
    shutil.copytree(trained_registry.registry, registry_copy)
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    env = settings_env(Settings(registry=str(registry_copy), data_dir=trained_registry.data_dir,
                                state_dir=str(tmp_path / "state"), key_prefix="bct-up:",
                                prefect_api_url=prefect_api))
    assert "BATCOMPUTER_REDIS_URL" not in env  # up finds redis-server on PATH and starts its own
    process = subprocess.Popen([str(Path(sys.executable).parent / "batcomputer"), "up", "--port", str(port),
                                "--flower", str(flower_port)],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True).start()
    seen: list[str] = []
    try:
        while not any("Ctrl-C stops everything" in line for line in seen):  # the whole report
            seen.append(lines.get(timeout=90))
        redis_url = next(line.split()[1] for line in seen if line.startswith("redis: "))
        assert "(redis-server)" in "".join(seen)
        base = f"http://127.0.0.1:{port}"
        record = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
        response = requests.post(f"{base}/api/models/crime/jobs", json=record, timeout=10)
        assert response.status_code == 202
        job = requests.get(f"{base}{response.headers['Location']}?wait=20", timeout=30).json()
        bundle = Registry.from_settings(trained_registry).bundle("crime", "production")
        assert f"prefect: http://127.0.0.1:{prefect_port}" in "".join(seen)
        assert job["state"] == "succeeded"
        assert (job["version"], job["bundle_sha256"]) == (bundle.version, bundle.sha256)
        assert set(job["results"][0]) == {"caughtProb", "notCaughtProb", "label", "warnings"}
        per_core = os.cpu_count() or 1  # record worker processes and bulk scoring processes: one per core
        assert requests.get(f"{base}/readyz", timeout=10).json()["workers"] == {"records": per_core, "bulk": per_core}
        # Celery's own tools see every worker: `celery inspect ping` as the README writes it, and Flower.
        celery_env = {**env, "BATCOMPUTER_REDIS_URL": redis_url}
        ping = subprocess.run([str(Path(sys.executable).parent / "celery"), "-A", "worker.celery_app", "inspect",
                               "ping"], env=celery_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert ping.returncode == 0 and f"{per_core + 1} nodes online" in ping.stdout, ping.stdout + ping.stderr
        flower_line = next(line for line in seen if line.strip().startswith("flower "))
        assert f"flower   http://127.0.0.1:{flower_port}/ (user admin, password " in flower_line
        password = flower_line.rsplit("password ", 1)[1].strip().rstrip(")")
        flower = f"http://127.0.0.1:{flower_port}"
        # Flower's API can revoke tasks: without the password, nothing (the probe's cross-site revoke got in)
        revoke = requests.post(f"{flower}/api/task/revoke/x", headers={"Origin": "http://evil.example"}, timeout=10)
        assert revoke.status_code in (401, 403)  # refused either way
        assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401

        def flower_online() -> dict[str, bool] | None:
            found = requests.get(f"{flower}/api/workers?status=true", auth=("admin", password), timeout=10).json()
            return found if len(found) == per_core + 1 and all(found.values()) else None

        online = wait_until(flower_online, 60, "Flower to list every worker online")
        assert sum(name.startswith("records-") for name in online) == per_core
        assert sum(name.startswith("bulk-") for name in online) == 1

        # The flow runner serves the deployments; a retrain run from the command line finds up's Prefect
        # server, publishes a new version, and the gateway answers with it without a restart.
        def deployments() -> set[str]:
            found = requests.post(f"{prefect_api}/deployments/filter", json={}, timeout=10).json()
            return {d["name"] for d in found}

        wait_until(lambda: {"retrain-crime", "retrain"} <= deployments(), 120, "the flow runner's deployments")
        spec = (ROOT / "training" / "specs" / "titanic.toml").read_text().replace("max_iter = 150", "max_iter = 40")
        (tmp_path / "titanic-quick.toml").write_text(spec)
        own = {k: v for k, v in env.items() if not k.startswith("PREFECT_")}
        own.pop("BATCOMPUTER_PREFECT_API_URL")  # found from up's state folder
        retrained = subprocess.run([str(Path(sys.executable).parent / "batcomputer"), "retrain", "titanic",
                                    "--policy", "always", "--no-fetch", "--spec", str(tmp_path / "titanic-quick.toml")],
                                   env=own, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert retrained.returncode == 0, retrained.stdout + retrained.stderr
        assert "version 2 (new), promoted" in retrained.stdout
        info = requests.get(f"{base}/api/info?model=titanic", timeout=10).json()["metadata"]
        assert info["version"] == 2
        runs = requests.post(f"{prefect_api}/flow_runs/filter", json={}, timeout=10).json()
        assert any(run["state_type"] == "COMPLETED" for run in runs)  # the run is on up's server
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(90) == 0
    assert not reachable(redis_url)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{prefect_api}/health", timeout=5)
