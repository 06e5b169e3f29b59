"""Faults with the shipped defaults: workers SIGKILLed mid-flight, a job outliving the visibility timeout, a
message that never reached the broker. Real gateway (gunicorn), real supervised Celery workers, real Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import FINAL, Keys
from batcomputer.models.bundle import Draft
from batcomputer.settings import Settings
from tests.conftest import Services, free_port, private_settings, remove_keys, wait_until
from tests.integration.worker.test_worker_recovery import RECORD, publish
from tests.pipelines import Gated

DEFAULTS = Settings()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_worker_processes(supervisor: Any) -> list[int]:
    """SIGKILL every Celery process under a supervisor (as an OOM kill would); the supervisor lives on."""
    pids = descendants(supervisor.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@pytest.fixture
def chaos(tmp_path: Path, redis_base_url: str, settings: Settings,
          titanic_draft: Draft) -> Iterator[tuple[Services, str]]:
    """A stack with the shipped defaults (own key prefix and registry) serving a model behind a gate."""
    own = private_settings(settings, redis_base_url)
    assert (own.lease_seconds, own.visibility_timeout_seconds, own.max_attempts) == (
        DEFAULTS.lease_seconds, DEFAULTS.visibility_timeout_seconds, DEFAULTS.max_attempts)
    logs = tmp_path / "logs"
    logs.mkdir()
    services = Services(own, logs)
    gate = f"{own.key_prefix}gate"
    # Its jobs run as long as the gate stays shut, longer than the visibility timeout: a model this slow
    # declares a time limit of its own in its spec.
    slow = dataclasses.replace(titanic_draft, spec={**titanic_draft.spec, "timeouts": {"records": 300}})
    publish(services, slow, "gated", Gated(titanic_draft.pipeline, redis_base_url, gate))
    try:
        yield services, gate
        assert services.server_errors() == [], "the gateway answered 500"
    finally:
        services.stop()
        remove_keys(redis_base_url, own.key_prefix)


def final_jobs(base: str, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = []
    for job_id in ids:
        job = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
        if job["state"] not in FINAL:
            return None
        jobs.append(job)
    return jobs


def test_every_job_in_flight_on_killed_workers_succeeds_once_within_60_s(chaos: tuple[Services, str]) -> None:
    services, gate = chaos
    records_worker = services.worker("records")
    bulk_worker = services.worker("bulk")
    base = services.gateway(free_port())
    session = requests.Session()

    def submit(body: dict[str, Any]) -> tuple[str, int]:
        response = session.post(f"{base}/api/models/gated/jobs", json=body, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["id"], response.json()["count"]

    singles = [{**RECORD, "age": float(1 + i % 80)} for i in range(400)]
    lists = [{"records": [{**RECORD, "age": float(1 + (i + j) % 80)} for j in range(1_000)]} for i in range(20)]
    with ThreadPoolExecutor(16) as pool:
        accepted = list(pool.map(submit, [*singles, *lists]))
    gauge = redis.Redis.from_url(services.settings.redis_url or "")
    # Both workers are scoring (each holds a call at the gate) with more work prefetched and queued.
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 2, 30, "both workers to reach the model")
    killed = kill_worker_processes(records_worker) + kill_worker_processes(bulk_worker)
    killed_at = time.monotonic()
    assert killed, "no worker process was found to kill"
    gauge.rpush(gate, *["open"] * 5_000)
    ids = [job_id for job_id, _ in accepted]
    jobs = wait_until(lambda: final_jobs(base, ids), 60, "every accepted job to finish within 60 s of the kill",
                      interval=0.5)
    recovered_in = time.monotonic() - killed_at
    stats = JobStore(gauge, services.settings.key_prefix).stats()
    succeeded = [j for j in jobs if j["state"] == "succeeded" and len(j["results"]) == j["count"]]
    print(f"\naccepted {len(accepted)} jobs ({sum(c for _, c in accepted)} records); succeeded {len(succeeded)}; "
          f"lost {len(accepted) - len(succeeded)}; rescored {stats.get('rescored', 0)}; sent again by the sweeper "
          f"{stats.get('resent', 0)}; duplicate deliveries skipped {stats.get('duplicates', 0)}; "
          f"all final {recovered_in:.1f} s after the kill")
    assert len(succeeded) == len(accepted)
    assert [len(j["results"]) for j in jobs] == [count for _, count in accepted]
    assert stats.get("rescored", 0) == 0
    assert max(j["attempts"] for j in jobs) == 2  # the jobs held by the killed workers came back once
    assert records_worker.poll() is None and bulk_worker.poll() is None  # the supervisors brought them back


def test_a_job_longer_than_the_visibility_timeout_runs_once_on_its_live_worker(chaos: tuple[Services, str]) -> None:
    services, gate = chaos
    services.worker("records")
    services.worker("records")  # an idle second worker, ready to take any redelivered message
    base = services.gateway(free_port())
    job_id = requests.post(f"{base}/api/models/gated/jobs", json=RECORD, timeout=10).json()["id"]
    gauge = redis.Redis.from_url(services.settings.redis_url or "")
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 1, 30, "the job to reach the model")
    keys = Keys(services.settings.key_prefix)
    # The broker hands the unacknowledged message out again after the visibility timeout; the lease that
    # the heartbeat keeps renewing makes that delivery a recognised duplicate.
    def delivered_again() -> bool:
        attempts = int(gauge.hget(keys.job(job_id), "attempts") or 0)
        return int(gauge.hget(keys.stats, "duplicates") or 0) >= 1 or attempts > 1

    wait_until(delivered_again, services.settings.visibility_timeout_seconds + 30,
               "the broker to deliver the running job again")
    running = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
    assert (running["state"], running["attempts"]) == ("running", 1), "the job was taken from its live worker"
    gauge.rpush(gate, "open")
    job = requests.get(f"{base}/api/jobs/{job_id}?wait=20", timeout=30).json()
    assert (job["state"], job["attempts"]) == ("succeeded", 1)
    assert gauge.llen(f"{gate}:waiting") == 1  # the model ran once
    assert int(gauge.hget(keys.stats, "rescored") or 0) == 0


def test_a_job_whose_message_never_reached_the_broker_is_sent_by_the_sweeper(chaos: tuple[Services, str],
                                                                              titanic_draft: Draft) -> None:
    from api.app import create_app

    services, _ = chaos
    publish(services, titanic_draft, "plain", titanic_draft.pipeline)
    services.worker("records")
    app = create_app(services.settings)

    def broken(*_: Any, **__: Any) -> None:
        raise ConnectionError("the broker refused the message")

    app.extensions["gateway"].publisher.send = broken  # the broker boundary fails
    response = app.test_client().post("/api/models/plain/jobs", json=RECORD)
    assert response.status_code == 202 and response.get_json()["state"] == "queued"
    job_id = response.get_json()["id"]
    client = app.test_client()
    job = wait_until(lambda: (j := client.get(f"/api/jobs/{job_id}").get_json())["state"] in FINAL and j,
                     services.settings.visibility_timeout_seconds + 30, "the sweeper to send the job")
    assert job["state"] == "succeeded" and job["attempts"] == 1
