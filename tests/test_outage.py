"""A Redis outage: 503 with Retry-After (never a 500) while it is down; accepted jobs survive its restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from api.app import create_app
from batcomputer.bundle import Draft
from batcomputer.redis_server import free_port, start_redis_server
from batcomputer.registry import Registry
from tests.conftest import Services, wait_until

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
