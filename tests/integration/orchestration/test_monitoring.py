"""Drift of captured traffic, shown: records like the training data leave the model `ok`; records with a shifted
mix (every passenger a man older than anyone aboard) make the monitor alert on those fields, the gateway show
it (JSON and /metrics), and, with the flows served on a Prefect server as `up` starts them, the monitor's event
start the model's retrain deployment by its trigger (once: a second alert within the cooldown starts nothing)."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.app import create_app
from batcomputer.jobqueue.connection import redis_client
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.monitoring.capture import Capture
from batcomputer.monitoring.monitor import watch
from batcomputer.monitoring.store import MonitorStore
from batcomputer.settings import Settings
from cli.launchers.prefect_server import PrefectServer, prefect_env, start_prefect_server
from orchestration.monitoring import DRIFT_ALERT
from tests.conftest import free_port, private_settings, remove_keys, settings_env, wait_until
from tests.integration.orchestration.test_flows_server import api


def traffic(schema: Any, rows: int, shifted: bool, seed: int = 5) -> list[dict[str, Any]]:
    """Records drawn from the version's own training profile (its category shares, histogram buckets and
    missing share), or, ``shifted``, every passenger a man in third class older than anyone aboard (81-95)."""
    rng = np.random.default_rng(seed)
    if shifted:
        return [{"pclass": 3, "sex": "male", "age": float(rng.uniform(81, 95)), "sibsp": 0, "parch": 0}
                for _ in range(rows)]
    records: list[dict[str, Any]] = [{} for _ in range(rows)]
    for spec in schema.fields:
        entry = schema.profile[spec.name]
        missing = float(entry.get("missing", 0.0))
        for record in records:
            if rng.random() < missing:
                record[spec.name] = None
            elif spec.kind == "categorical":
                names = list(entry["frequencies"])
                shares = np.array([entry["frequencies"][n] for n in names], dtype=float)
                record[spec.name] = str(rng.choice(names, p=shares / shares.sum()))
            else:
                edges, shares = entry["histogram"]["edges"], np.array(entry["histogram"]["shares"], dtype=float)
                bucket = int(rng.choice(len(shares), p=shares / shares.sum()))
                if bucket == 0:
                    value = edges[0]
                elif bucket == len(edges):
                    value = edges[-1] + 1
                elif spec.integer:
                    value = edges[bucket]
                else:
                    value = float(rng.uniform(edges[bucket - 1], edges[bucket])) or edges[bucket]
                record[spec.name] = float(value)
    return records


def capture_traffic(settings: Settings, records: list[dict[str, Any]]) -> None:
    bundle = Registry.from_settings(settings).bundle("titanic", "production", pipeline=True)
    capture = Capture(settings.capture_root or "")
    capture.add(bundle, "job", [f"j{i}" for i in range(len(records))], [0] * len(records), records,
                score(bundle, records))
    capture.flush(force=True)


@pytest.fixture
def watched(settings: Settings, titanic_draft: Draft, tmp_path: Path, redis_base_url: str) -> Any:
    own = dataclasses.replace(private_settings(settings, redis_base_url), capture_root=str(tmp_path / "capture"))
    registry = Registry.from_settings(own)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    yield own
    remove_keys(redis_base_url, own.key_prefix)


def test_traffic_like_training_is_ok_and_a_shifted_mix_alerts_on_its_fields(watched: Settings) -> None:
    registry = Registry.from_settings(watched)
    schema = registry.schema("titanic", "production")
    capture_traffic(watched, traffic(schema, 600, shifted=False))
    calm = watch(watched, registry, "titanic")
    assert calm["state"] == "ok", calm["windows"]["hour"]
    assert calm["windows"]["hour"]["1"]["records"] == 600
    capture_traffic(watched, traffic(schema, 2_000, shifted=True))
    found = watch(watched, registry, "titanic")
    assert found["state"] == "alert"
    alerted = {alert["field"] for alert in found["alerts"]}
    assert {"sex", "age", "pclass"} <= alerted
    seen = found["windows"]["hour"]["1"]
    assert seen["records"] == 2_600 and seen["labels"]["died"] > 0.8  # old men: the mix moved as well
    assert seen["holdout_labels"]["died"] < 0.8 and math.isclose(sum(seen["holdout_labels"].values()), 1.0)
    assert next(d for d in seen["fields"] if d["field"] == "age")["warning_rate"] > 0.7  # beyond any age seen

    MonitorStore(redis_client(watched), watched.key_prefix).save(found)
    client = create_app(watched).test_client()
    shown = client.get("/api/models/titanic/monitoring")
    assert shown.status_code == 200 and shown.get_json()["state"] == "alert"
    assert client.get("/api/models/nosuch/monitoring").status_code == 404
    scraped = client.get("/metrics").get_data(as_text=True)
    assert 'batcomputer_drift_state{model="titanic"} 2.0' in scraped
    assert 'batcomputer_drift_psi{field="sex",model="titanic",version="1",window="hour"}' in scraped


@pytest.fixture
def server(tmp_path: Path) -> Any:
    started = start_prefect_server(tmp_path / "prefect", free_port(), ui=False)
    yield started
    started.stop()


def flow_runs(server: PrefectServer, name: str) -> list[dict[str, Any]]:
    """The runs of deployment ``name`` that something started (not the schedule's own upcoming runs)."""
    deployments = {d["name"]: d["id"] for d in api(server, "/deployments/filter", {})}
    if name not in deployments:
        return []
    found: list[dict[str, Any]] = api(server, "/flow_runs/filter",
                                      {"flow_runs": {"deployment_id": {"any_": [deployments[name]]}}})
    return [run for run in found if not run.get("auto_scheduled")]


def test_major_drift_starts_the_retrain_deployment_by_its_event_trigger_once_per_cooldown(
        watched: Settings, server: PrefectServer, data_dir: Path, tmp_path: Path) -> None:
    own = dataclasses.replace(watched, data_dir=str(data_dir), prefect_api_url=server.api_url)
    capture_traffic(own, traffic(None, 2_000, shifted=True))
    env = {**settings_env(own), **prefect_env(tmp_path / "prefect", server.api_url)}
    log = (tmp_path / "serve.log").open("ab")
    serve = subprocess.Popen([str(Path(sys.executable).parent / "batcomputer"), "flows", "serve", "--model",
                              "titanic"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: {"retrain-titanic", "monitor-titanic"} <= {d["name"] for d in api(
            server, "/deployments/filter", {})}, 120, "the served deployments")
        # The monitor deployment runs every 5 minutes; run the flow now, as the schedule would.
        done = subprocess.run([sys.executable, "-c", "from orchestration.monitoring import monitor; "
                               "print(monitor(model='titanic')['state'])"], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip().endswith("alert"), done.stderr[-2000:]
        triggered = wait_until(lambda: flow_runs(server, "retrain-titanic") or None, 120,
                               "the drift trigger to start the retrain deployment")
        assert len(triggered) == 1 and {k: triggered[0]["parameters"][k] for k in ("model", "policy")} == {
            "model": "titanic", "policy": "auto"}
        reason = triggered[0]["parameters"]["reason"]  # why it runs travels with it: the fields and their PSI
        assert reason.startswith("monitor alert: ") and all(f"version 1 {f} PSI " in reason
                                                             for f in ("sex", "age", "pclass")), reason
        first = MonitorStore(redis_client(own), own.key_prefix).load("titanic")
        assert first is not None and first["retrain_requested_at"]
        again = subprocess.run([sys.executable, "-c", "from orchestration.monitoring import monitor; "
                                "print(monitor(model='titanic')['state'])"], env=env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0 and again.stdout.strip().endswith("alert")
        stored = MonitorStore(redis_client(own), own.key_prefix).load("titanic")
        assert stored is not None and stored["retrain_requested_at"] == first["retrain_requested_at"]
        events = api(server, "/events/filter", {"filter": {"event": {"name": [DRIFT_ALERT]}}})["events"]
        assert len(events) == 1  # the second alert was within the cooldown: no event, no second retrain
        assert len(flow_runs(server, "retrain-titanic")) == 1
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
