"""A Redis outage: 503 with Retry-After (never a 500) while it is down; accepted jobs survive its restart."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis, RedisError

from api.app import create_app
from batcomputer.jobqueue.keyspace import Keys
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from cli.launchers.redis_server import start_redis_server
from tests.conftest import Services, free_port, wait_until

RECORD = {"pclass": 3, "sex": "male", "age": 30.0, "sibsp": 0, "parch": 0}


def test_redis_down_gives_503_then_everything_recovers(tmp_path: Path, services: Services,
                                                       titanic_draft: Draft) -> None:
    port = free_port()
    folder = tmp_path / "redis"
    redis = start_redis_server(folder, port)
    services.settings = dataclasses.replace(services.settings, redis_url=redis.url)
    registry = Registry.from_settings(services.settings)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    client = create_app(services.settings).test_client()
    try:
        accepted = client.post("/api/models/titanic/jobs", json=RECORD)
        assert accepted.status_code == 202  # no worker yet: it waits in the queue

        redis.stop()  # Redis goes away with the job queued ...
        for response in (client.post("/api/models/titanic/jobs", json=RECORD),
                         client.get(f"/api/jobs/{accepted.get_json()['id']}"),
                         client.get("/api/jobs"),
                         client.get("/readyz")):
            assert response.status_code == 503, response.get_data(as_text=True)
            assert int(response.headers["Retry-After"]) > 0
            assert response.get_json()["code"] == "unavailable"
        assert client.get("/healthz").status_code == 200

        redis = start_redis_server(folder, port)  # ... and comes back with its append-only file
        services.worker("records")
        job = client.get(f"/api/jobs/{accepted.get_json()['id']}?wait=20").get_json()
        assert job["state"] == "succeeded", job

        redis.stop()
        assert client.post("/api/models/titanic/jobs", json=RECORD).status_code == 503
        redis = start_redis_server(folder, port)
        assert wait_until(lambda: client.get("/readyz").status_code == 200, 30, "readiness after the restart")
        # The same worker reconnects on its own.
        again = client.post("/api/models/titanic/jobs?wait=20", json=RECORD).get_json()
        assert again["state"] == "succeeded"
    finally:
        redis.stop()


class Load:
    """Clients submitting records without pause from several threads; remembers every accepted job."""

    def __init__(self, base: str, threads: int = 4) -> None:
        self.base = base
        self.accepted: list[str] = []
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, index: int) -> None:
        session = requests.Session()
        count = 0
        while not self.stopping.is_set():
            count += 1
            body: dict[str, Any] = {**RECORD, "age": float(1 + count % 70)}
            if index == 0 and count % 10 == 0:
                body = {"records": [body] * 150}  # now and then a job for the bulk worker
            try:
                response = session.post(f"{self.base}/api/models/titanic/jobs", json=body, timeout=30)
            except requests.RequestException:
                status = 0
            else:
                status = response.status_code
                if status == 503:
                    assert int(response.headers["Retry-After"]) > 0
                    self.stopping.wait(0.2)  # a client honouring Retry-After, briefly
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 202:
                    self.accepted.append(response.json()["id"])

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.accepted)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(40)


@pytest.mark.timeout(900)
def test_ten_redis_outages_under_load_lose_no_job_and_stop_nothing(tmp_path: Path, services: Services,
                                                                 titanic_draft: Draft) -> None:
    folder = tmp_path / "redis"
    redis = start_redis_server(folder, free_port())
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    services.settings = dataclasses.replace(services.settings, redis_url=redis.url)
    registry = Registry.from_settings(services.settings)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    supervisors = [services.worker("records"), services.worker("bulk")]
    base = services.gateway(free_port())
    load = Load(base).start()
    keys = Keys(services.settings.key_prefix)
    checked = 0
    try:
        for outage in range(10):
            so_far = len(load.snapshot())
            wait_until(lambda so_far=so_far: len(load.snapshot()) >= so_far + 20, 60, "jobs to be accepted")
            before = load.snapshot()
            redis.stop()
            down_since = time.monotonic()
            while time.monotonic() - down_since < 10:  # the outage lasts 10 s; meanwhile the gateway answers
                started = time.monotonic()
                assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
                assert time.monotonic() - started < 1
                refused = requests.post(f"{base}/api/models/titanic/jobs", json=RECORD, timeout=30)
                assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
                time.sleep(1)  # pacing of the probe, not a wait for anything
            redis = start_redis_server(folder, port)
            wait_until(lambda: requests.get(f"{base}/readyz", timeout=5).status_code == 200, 60,
                       f"readiness after outage {outage + 1}")
            client = Redis.from_url(redis.url)
            waiting = before[checked:]

            def unfinished(client: Redis = client, waiting: list[str] = waiting) -> list[str]:
                with client.pipeline(transaction=False) as pipe:
                    for job_id in waiting:
                        pipe.hget(keys.job(job_id), "state")
                    states = pipe.execute()
                return [job_id for job_id, state in zip(waiting, states, strict=True) if state != b"succeeded"]

            try:
                wait_until(lambda: not unfinished(), 60, f"every job accepted before outage {outage + 1} to succeed")
            except AssertionError:
                stuck = {job_id: {k.decode(): v.decode()[:100] for k, v in client.hgetall(keys.job(job_id)).items()}
                         for job_id in unfinished()[:3]}
                raise AssertionError(f"{len(unfinished())} job(s) accepted before outage {outage + 1} did not "
                                     f"succeed, e.g. {stuck}") from None
            checked = len(before)
            assert all(s.poll() is None for s in supervisors), "a worker supervisor exited"
            assert services.processes[-1].poll() is None, "the gateway exited"
    finally:
        load.stop()
        services.stop()
        try:
            stats = {k.decode(): int(v) for k, v in Redis.from_url(redis.url).hgetall(keys.stats).items()}
        except RedisError:  # the test failed during an outage: its own error says why
            stats = {}
        redis.stop()
    print(f"\n10 outages of 10 s: {len(load.accepted)} jobs accepted, every one accepted before an outage "
          f"succeeded ({checked} checked); answers by status: {dict(sorted(load.statuses.items()))}; "
          f"recovery counters {stats}")
    assert set(load.statuses) <= {0, 202, 503}, load.statuses
    assert services.server_errors() == []
