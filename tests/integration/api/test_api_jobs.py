"""Submitting records to the live gateway (gunicorn), scored by real Celery workers on Redis."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import Services, wait_until

CRIME = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
TITANIC = {"pclass": 3, "sex": "male", "age": 22.0, "sibsp": 1, "parch": 0}
Stack = tuple[str, Settings, Services]


def poll(base: str, job_id: str) -> dict[str, Any]:
    """GET the job until it is final (the route's own wait does the waiting)."""
    def final() -> dict[str, Any] | None:
        job = requests.get(f"{base}/api/jobs/{job_id}?wait=5", timeout=10).json()
        return job if job["state"] in ("succeeded", "failed", "dead", "cancelled") else None

    return wait_until(final, 60, f"job {job_id} to finish")  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "record", "outputs"), [
    ("crime", CRIME, ("notCaughtProb", "caughtProb")),
    ("titanic", TITANIC, ("died_proba", "survived_proba")),
])
def test_submit_then_poll(stack: Stack, model: str, record: dict[str, Any], outputs: tuple[str, str]) -> None:
    base, settings, _ = stack
    response = requests.post(f"{base}/api/models/{model}/jobs", json=record, timeout=10)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["Location"] == f"/api/jobs/{job_id}"
    assert response.json()["state"] == "queued"  # a 202 without ?wait answers the job as it was created
    job = poll(base, job_id)
    bundle = Registry.from_settings(settings).bundle(model, "production")
    assert job["state"] == "succeeded"
    assert (job["model"], job["version"], job["bundle_sha256"]) == (model, bundle.version, bundle.sha256)
    [result] = job["results"]
    assert set(result) == {*outputs, "label", "warnings"}
    assert [w["field"] for w in result["warnings"]] in ([], ["month"])  # crime: trained on other months
    assert result[outputs[0]] + result[outputs[1]] == pytest.approx(1.0)
    assert result["label"] in bundle.schema.labels
    assert job["created"] <= job["started"] <= job["finished"]


def test_a_list_of_records_keeps_its_order(stack: Stack) -> None:
    base, _, _ = stack
    records = [{**CRIME, "crime": crime} for crime in ("Burglary", "Drugs", "Robbery", "Shoplifting")]
    response = requests.post(f"{base}/api/models/crime/jobs?wait=20", json={"records": records}, timeout=30)
    assert response.status_code == 200
    job = response.json()
    assert job["count"] == 4 and len(job["results"]) == 4
    one_by_one = [requests.post(f"{base}/api/models/crime/jobs?wait=20", json=r, timeout=30).json()["results"][0]
                  for r in records]
    assert [r["caughtProb"] for r in job["results"]] == pytest.approx([r["caughtProb"] for r in one_by_one])
    assert len({round(r["caughtProb"], 9) for r in job["results"]}) > 1


def test_large_requests_go_to_the_bulk_queue(stack: Stack) -> None:
    base, settings, _ = stack
    records = [{**CRIME, "month": 1 + i % 12} for i in range(settings.bulk_threshold_records + 1)]
    job = requests.post(f"{base}/api/models/crime/jobs?wait=20", json={"records": records}, timeout=30).json()
    assert job["queue"] == "bulk" and job["state"] == "succeeded" and len(job["results"]) == len(records)


def test_wait_returns_the_finished_job(stack: Stack) -> None:
    base, _, _ = stack
    response = requests.post(f"{base}/api/models/titanic/jobs?wait=20", json=TITANIC, timeout=30)
    assert response.status_code == 200
    assert response.json()["state"] == "succeeded"
    too_long = requests.post(f"{base}/api/models/titanic/jobs?wait=31", json=TITANIC, timeout=30)
    assert too_long.status_code == 400 and too_long.json()["field"] == "wait"


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(stack: Stack) -> None:
    base, _, _ = stack
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = requests.post(f"{base}/api/models/crime/jobs?wait=20", json=CRIME, headers=headers, timeout=30)
    again = requests.post(f"{base}/api/models/crime/jobs", json=CRIME, headers=headers, timeout=30)
    assert again.json()["id"] == first.json()["id"]
    other = requests.post(f"{base}/api/models/crime/jobs", json={**CRIME, "month": 3}, headers=headers, timeout=30)
    assert other.status_code == 409
    assert other.json()["code"] == "conflict" and "Idempotency-Key" in other.json()["detail"]


def test_concurrent_retries_with_one_key_get_one_job_and_never_a_404(stack: Stack) -> None:
    base, _, _ = stack
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=16)
    session.mount("http://", adapter)
    for round_number in range(20):
        key = uuid.uuid4().hex
        barrier = threading.Barrier(16)

        def submit(_: int, key: str = key, barrier: threading.Barrier = barrier) -> tuple[int, str]:
            barrier.wait()
            response = session.post(f"{base}/api/models/crime/jobs", json=CRIME, headers={"Idempotency-Key": key},
                                    timeout=30)
            return response.status_code, response.json().get("id", response.text)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(submit, range(16)))
        assert {status for status, _ in answers} <= {200, 202}, (round_number, answers)
        assert len({job_id for _, job_id in answers}) == 1, (round_number, answers)


def test_invalid_records_get_422_with_every_problem(stack: Stack) -> None:
    base, _, _ = stack
    response = requests.post(f"{base}/api/models/crime/jobs", json={"crime": "Jaywalking", "month": "10",
                                                                    "colour": "red"}, timeout=10)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/validation") and body["status"] == 422
    codes = {p["field"]: p["code"] for p in body["problems"]}
    assert codes == {"force": "missing", "crime": "category", "month": "type", "colour": "unknown_field"}
    listed = requests.post(f"{base}/api/models/crime/jobs", json={"records": [CRIME, {**CRIME, "month": 0}]},
                           timeout=10).json()
    assert [(p["record"], p["field"], p["code"]) for p in listed["problems"]] == [(1, "month", "range")]


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "bad_request"),
    (b"", 400, "bad_request"),
    (b"[1, 2]", 400, "bad_request"),
    (b'{"records": []}', 400, "bad_request"),
    (b'{"records": "x"}', 400, "bad_request"),
])
def test_malformed_bodies_get_400(stack: Stack, body: bytes, status: int, code: str) -> None:
    base, _, _ = stack
    response = requests.post(f"{base}/api/models/crime/jobs", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_limits_on_records_and_body_size(stack: Stack) -> None:
    base, settings, _ = stack
    many = requests.post(f"{base}/api/models/crime/jobs", json={"records": [CRIME] * (settings.max_records + 1)},
                         timeout=30)
    assert many.status_code == 413 and many.json()["code"] == "too_many_records"
    huge = requests.post(f"{base}/api/models/crime/jobs", data=b"x" * (settings.max_body_bytes + 1), timeout=30,
                         headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"


def test_unknown_model_version_alias_and_job(stack: Stack) -> None:
    base, _, _ = stack
    assert requests.post(f"{base}/api/models/nosuch/jobs", json=CRIME, timeout=10).json()["code"] == "model_not_found"
    version = requests.post(f"{base}/api/models/crime/jobs?version=99", json=CRIME, timeout=10)
    assert (version.status_code, version.json()["code"]) == (404, "version_not_found")
    alias = requests.post(f"{base}/api/models/crime/jobs?alias=canary", json=CRIME, timeout=10)
    assert (alias.status_code, alias.json()["code"]) == (404, "alias_not_found")
    job = requests.get(f"{base}/api/jobs/{uuid.uuid4().hex}", timeout=10)
    assert (job.status_code, job.json()["code"]) == (404, "not_found")
    assert requests.get(f"{base}/api/nothing-here", timeout=10).status_code == 404


def test_recent_jobs_newest_first_filtered_and_paged(stack: Stack) -> None:
    base, _, _ = stack
    ids = [requests.post(f"{base}/api/models/titanic/jobs?wait=20", json=TITANIC, timeout=30).json()["id"]
           for _ in range(3)]
    page = requests.get(f"{base}/api/jobs?model=titanic&state=succeeded&limit=2", timeout=10).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    assert all(j["model"] == "titanic" and j["state"] == "succeeded" for j in page["jobs"])
    following = requests.get(f"{base}{page['next']}", timeout=10).json()
    assert following["jobs"][0]["id"] == ids[0]
    assert requests.get(f"{base}/api/jobs?state=weird", timeout=10).status_code == 400


def test_models_are_listed_and_described(stack: Stack) -> None:
    base, _, _ = stack
    listed = requests.get(f"{base}/api/models", timeout=10).json()["models"]
    assert [m["name"] for m in listed] == ["crime", "titanic"]
    assert listed[0]["aliases"] == {"production": 1} and listed[0]["metrics"]["log_loss"] > 0
    crime = requests.get(f"{base}/api/models/crime", timeout=10).json()
    assert crime["schema"]["outputs"] == ["notCaughtProb", "caughtProb"]
    assert [f["name"] for f in crime["schema"]["fields"]] == ["force", "crime", "month", "district"]
    assert crime["versions"][0]["sha256"] and crime["metrics"]["pr_auc"] > 0


def test_health_and_readiness(stack: Stack) -> None:
    base, _, _ = stack
    assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "alive"}
    ready = requests.get(f"{base}/readyz", timeout=10).json()
    # one record worker process here; the bulk worker's scoring processes are one per core, as shipped
    assert ready["status"] == "ready" and ready["workers"] == {"records": 1, "bulk": os.cpu_count() or 1}
    assert set(ready["queues"]) == {"records", "bulk"}  # what an autoscaler reads (KEDA's metrics-api scaler)
    assert all(q["depth"] >= 0 and q["drain_per_second"] >= 0 for q in ready["queues"].values())
