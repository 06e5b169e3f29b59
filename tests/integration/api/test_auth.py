"""Access control in the production profile: keys made by the CLI, 401 without one, scopes, jobs visible
only to their key, per-key rate limits, `by` from the key; and the local profile's loopback rule."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from batcomputer.apikeys import digest, owner_id
from batcomputer.errors import ConfigurationError
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import Services, run_cli, settings_env

RECORD = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}


def create_key(settings: Settings, name: str, scope: str) -> str:
    done = run_cli(settings_env(settings), "keys", "create", name, "--scope", scope)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def production(stack: tuple[str, Settings, Services], tmp_path: Path) -> Iterator[tuple[FlaskClient, Settings,
                                                                                           dict[str, str]]]:
    _, base, _ = stack
    registry = tmp_path / "registry"
    import shutil

    shutil.copytree(base.registry, registry)  # alias moves below must not touch the session's registry
    settings = dataclasses.replace(base, profile="production", keys_file=str(tmp_path / "keys.json"),
                                   registry=str(registry))
    keys = {"alice": create_key(settings, "alice", "score"), "bob": create_key(settings, "bob", "score"),
            "ops": create_key(settings, "ops", "admin")}
    yield create_app(settings).test_client(), settings, keys


def owner(name: str, token: str) -> str:
    """The id a key's jobs and files belong to."""
    return owner_id(name, digest(token))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_call_needs_a_key_and_the_right_scope(production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, settings, keys = production
    missing = client.post("/api/models/crime/jobs", json=RECORD)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.get_json()["code"] == "unauthorized"
    assert client.post("/api/models/crime/jobs", json=RECORD, headers=bearer("bc_not-a-key")).status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/openapi.json").status_code == 200
    accepted = client.post("/api/models/crime/jobs?wait=10", json=RECORD, headers=bearer(keys["alice"]))
    assert accepted.status_code == 200 and accepted.get_json()["owner"] == owner("alice", keys["alice"])
    for method, path in (("put", "/api/models/crime/aliases/production"), ("post", "/api/models/crime/rollback"),
                         ("post", "/api/models/crime/retrain"), ("put", "/api/models/crime/canary"),
                         ("delete", "/api/models/crime/canary"), ("get", "/api/models/crime/canary"),
                         ("get", "/api/models/crime/rollout")):
        refused = getattr(client, method)(path, json={"version": 1}, headers=bearer(keys["alice"]))
        assert refused.status_code == 403 and refused.get_json()["scope"] == "admin", path
    moved = client.put("/api/models/crime/aliases/staging", json={"version": 1, "reason": "try"},
                       headers=bearer(keys["ops"]))
    assert moved.status_code == 200 and moved.get_json()["move"]["by"] == "ops"
    assert Registry.from_settings(settings).history("crime", "staging")[-1]["by"] == "ops"


def test_a_job_is_visible_only_to_the_key_that_submitted_it(
        production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, _, keys = production
    job = client.post("/api/models/crime/jobs?wait=10", json=RECORD, headers=bearer(keys["alice"])).get_json()
    mine = client.get(f"/api/jobs/{job['id']}", headers=bearer(keys["alice"]))
    assert mine.status_code == 200
    for request in (lambda h: client.get(f"/api/jobs/{job['id']}", headers=h),
                    lambda h: client.get(f"/api/jobs/{job['id']}?wait=1", headers=h),
                    lambda h: client.delete(f"/api/jobs/{job['id']}", headers=h)):
        theirs = request(bearer(keys["bob"]))
        assert theirs.status_code == 404 and theirs.get_json()["code"] == "not_found"
    listed = client.get("/api/jobs", headers=bearer(keys["bob"])).get_json()["jobs"]
    assert job["id"] not in [j["id"] for j in listed]
    assert job["id"] in [j["id"] for j in client.get("/api/jobs", headers=bearer(keys["alice"])).get_json()["jobs"]]
    # the same Idempotency-Key from two clients gives each their own job
    first = client.post("/api/models/crime/jobs", json=RECORD, headers={**bearer(keys["alice"]),
                                                                        "Idempotency-Key": "k1"}).get_json()
    second = client.post("/api/models/crime/jobs", json={**RECORD, "month": 11},
                         headers={**bearer(keys["bob"]), "Idempotency-Key": "k1"})
    assert second.status_code == 202 and second.get_json()["id"] != first["id"]


def test_past_the_rate_limit_a_key_gets_429_with_retry_after(
        production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, settings, keys = production
    carol = create_key(settings, f"carol-{uuid.uuid4().hex[:6]}", "score")  # a key no earlier test has used
    statuses: list[Any] = []
    for _ in range(2 * settings.rate_limit_per_minute + 2):  # within one minute, or the next if it turns over
        statuses.append(client.get("/api/models/crime", headers=bearer(carol)))
        if statuses[-1].status_code == 429:
            break
    refused = statuses[-1]
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(statuses) >= settings.rate_limit_per_minute  # every request within the limit passed (unless the
    # minute turned over, which only gives more)
    assert client.get("/api/models/crime", headers=bearer(keys["alice"])).status_code == 200  # per key


def test_revoked_keys_stop_working_and_production_needs_keys(production: tuple[FlaskClient, Settings,
                                                                               dict[str, str]], tmp_path: Path) -> None:
    client, settings, keys = production
    listed = run_cli(settings_env(settings), "keys", "list")
    assert "alice" in listed.stdout and keys["alice"] not in listed.stdout + Path(settings.keys_file or "").read_text()
    assert run_cli(settings_env(settings), "keys", "revoke", "bob").returncode == 0
    assert client.get("/api/models", headers=bearer(keys["bob"])).status_code == 401
    with pytest.raises(ConfigurationError, match="needs API keys"):
        create_app(dataclasses.replace(settings, keys_file=str(tmp_path / "none.json")))
    local = settings_env(dataclasses.replace(settings, profile="local"))
    exposed = run_cli({**local, "BATCOMPUTER_API_HOST": "0.0.0.0"}, "api")
    assert exposed.returncode != 0 and "loopback" in exposed.stderr


def test_a_key_sends_outcomes_for_its_own_jobs_only(production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, _, keys = production
    job = client.post("/api/models/crime/jobs?wait=10", json=RECORD, headers=bearer(keys["alice"])).get_json()
    outcome = {"outcomes": [{"job": job["id"], "index": 0, "label": "caught"}]}
    theirs = client.post("/api/models/crime/outcomes", json=outcome, headers=bearer(keys["bob"]))
    assert theirs.status_code == 422 and theirs.get_json()["problems"][0]["code"] == "unknown_job"
    mine = client.post("/api/models/crime/outcomes", json=outcome, headers=bearer(keys["alice"]))
    assert mine.status_code == 200 and mine.get_json()["kept"] == 1
    # what every key's traffic adds up to is the operators': an admin key reads the monitor
    assert client.get("/api/models/crime/monitoring", headers=bearer(keys["alice"])).status_code == 403


def test_a_new_key_under_a_revoked_keys_name_sees_none_of_its_work(
        production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, settings, _ = production
    name = f"dave-{uuid.uuid4().hex[:6]}"
    old = create_key(settings, name, "score")
    job = client.post("/api/models/crime/jobs?wait=10", json=RECORD, headers=bearer(old)).get_json()
    assert run_cli(settings_env(settings), "keys", "revoke", name).returncode == 0
    new = create_key(settings, name, "score")
    assert client.get(f"/api/jobs/{job['id']}", headers=bearer(new)).status_code == 404
    assert client.get("/api/jobs", headers=bearer(new)).get_json()["jobs"] == []
    mine = client.post("/api/models/crime/jobs?wait=10", json=RECORD, headers=bearer(new)).get_json()
    assert mine["owner"] == owner(name, new) != job["owner"]


def test_the_cli_scores_files_through_a_production_gateway_with_its_key(
        stack: tuple[str, Settings, Services], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from tests.conftest import free_port
    from tests.integration.api.test_api_batches import crime_table

    _, base, _ = stack
    settings = dataclasses.replace(base, profile="production", keys_file=str(tmp_path / "keys.json"))
    key = create_key(settings, "batch-client", "score")
    logs = tmp_path / "logs"
    logs.mkdir()
    gateway = Services(settings, logs)  # the stack's workers score its jobs: same Redis, same prefix
    try:
        url = gateway.gateway(free_port())
        source, target = tmp_path / "in.parquet", tmp_path / "out.parquet"
        pq.write_table(crime_table(Registry.from_settings(base), 500, bad=False), source)
        env = {**settings_env(settings), "BATCOMPUTER_API_URL": url}
        refused = run_cli(env, "score", "crime", str(source), str(target))
        assert refused.returncode != 0 and "API key" in refused.stderr and not target.exists()
        done = run_cli({**env, "BATCOMPUTER_API_KEY": key}, "score", "crime", str(source), str(target))
        assert done.returncode == 0, done.stderr
        assert pq.read_table(target).num_rows == 500
        assert key not in repr(Settings.from_env({"BATCOMPUTER_API_KEY": key}))  # never in logs
    finally:
        gateway.stop()


def test_the_open_inference_protocol_takes_the_same_keys_and_owns_its_jobs(
        production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, _, keys = production
    body = {"inputs": [{"name": "force", "shape": [1], "datatype": "BYTES", "data": [RECORD["force"]]},
                       {"name": "crime", "shape": [1], "datatype": "BYTES", "data": [RECORD["crime"]]},
                       {"name": "month", "shape": [1], "datatype": "INT64", "data": [RECORD["month"]]}]}
    assert client.get("/v2/health/live").status_code == 200 and client.get("/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/models/crime", "/v2/models/crime/ready"):
        assert client.get(path).status_code == 401, path
    refused = client.post("/v2/models/crime/infer", json=body)
    assert refused.status_code == 401 and "API key" in refused.get_json()["detail"]
    answered = client.post("/v2/models/crime/infer", json=body, headers=bearer(keys["alice"]))
    assert answered.status_code == 200, answered.get_json()
    job = answered.get_json()["parameters"]["job"]
    shown = client.get(f"/api/jobs/{job}", headers=bearer(keys["alice"])).get_json()
    assert shown["owner"] == owner("alice", keys["alice"])
    assert client.get(f"/api/jobs/{job}", headers=bearer(keys["bob"])).status_code == 404


def test_guessing_keys_is_rate_limited_per_client_address(
        production: tuple[FlaskClient, Settings, dict[str, str]]) -> None:
    client, settings, keys = production
    guesser = {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"}  # this test's own address
    statuses = []
    for attempt in range(2 * settings.rate_limit_per_minute + 2):  # the minute may turn over once
        headers = bearer(f"bc_guess-{attempt}") if attempt % 2 else {}
        statuses.append(client.get("/api/models/crime", headers=headers, environ_base=guesser).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}
    assert len(statuses) >= settings.rate_limit_per_minute  # every guess within the limit got its 401
    assert client.get("/api/models/crime", headers=bearer(keys["alice"])).status_code == 200  # others are not held
