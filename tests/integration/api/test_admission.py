"""Admission control through the gateway: a queue at its depth limit answers 429 with Retry-After, accepts
again once real workers drain it, and an accepted job is never lost to the refusal of another."""

from __future__ import annotations

import dataclasses
from typing import Any

from api.app import create_app
from batcomputer.models.bundle import Draft
from tests.conftest import Services, wait_until
from tests.pipelines import publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}
LIMIT = 25  # the subject of the test, not a timeout: small so that the queue fills quickly


def test_a_full_queue_answers_429_and_accepts_again_once_workers_drain_it(services: Services,
                                                                          titanic_draft: Draft) -> None:
    publish(services, titanic_draft, "admitted", titanic_draft.pipeline)
    services.settings = dataclasses.replace(services.settings, max_queue_depth=LIMIT)
    client = create_app(services.settings).test_client()
    accepted = [client.post("/api/models/admitted/jobs", json={**RECORD, "age": float(i)}) for i in range(LIMIT)]
    assert [r.status_code for r in accepted] == [202] * LIMIT
    refused = client.post("/api/models/admitted/jobs", json=RECORD)
    problem = refused.get_json()
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert refused.content_type == "application/problem+json"
    assert problem["code"] == "too_many_requests" and problem["queue"] == "records" and problem["depth"] == LIMIT
    assert "workers running" in problem["detail"]
    services.worker("records")

    def all_done() -> list[dict[str, Any]] | None:
        jobs = [client.get(f"/api/jobs/{r.get_json()['id']}").get_json() for r in accepted]
        return jobs if all(j["state"] == "succeeded" for j in jobs) else None

    wait_until(all_done, 60, "the accepted jobs to be scored")
    again = client.post("/api/models/admitted/jobs?wait=20", json=RECORD)
    assert again.status_code == 200 and again.get_json()["state"] == "succeeded"
