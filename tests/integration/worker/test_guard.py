"""Guarded promotion, shown with a real worker and its sweeper at the shipped settings: a version whose every
job fails is promoted under load and moved back by the guard inside its window (the reason in the alias history
and the rollout), no accepted job is lost and only the bad version's jobs failed; then a good version passes its
window and stays."""

from __future__ import annotations

import time
from typing import Any

from api.app import create_app
from batcomputer.models.bundle import Draft
from batcomputer.models.guard import GUARD_ACTOR
from batcomputer.models.registry import Registry
from tests.conftest import Services, run_cli, settings_env
from tests.pipelines import Broken, publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


def submit_until(client: Any, done: Any, seconds: float, jobs: list[dict[str, Any]]) -> None:
    """Submit jobs one after another (each waits for its outcome, as a client under load would) until ``done()``
    holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the guard did not decide in time"
        answer = client.post("/api/models/titanic/jobs?wait=10", json=RECORD)
        assert answer.status_code in (200, 202), answer.get_json()
        jobs.append(answer.get_json())


def test_a_bad_version_is_moved_back_by_the_guard_and_a_good_one_stays(services: Services,
                                                                       titanic_draft: Draft) -> None:
    first = publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    bad = publish(services, titanic_draft, "titanic", Broken(titanic_draft.pipeline), promote=False, tag=1)
    good = publish(services, titanic_draft, "titanic", titanic_draft.pipeline, promote=False, tag=2)
    registry = Registry.from_settings(services.settings)
    services.worker("records")
    client = create_app(services.settings).test_client()

    def rollout() -> dict[str, Any]:
        return client.get("/api/models/titanic/rollout").get_json()

    jobs: list[dict[str, Any]] = []
    submit_until(client, lambda: len(jobs) >= 60, 120, jobs)  # the version in production has a record
    moved = client.put("/api/models/titanic/aliases/production", json={"version": bad, "reason": "try it"})
    assert moved.status_code == 200
    submit_until(client, lambda: registry.resolve("titanic", "production") == first, 180, jobs)
    back = registry.history("titanic", "production")[-1]
    assert back["by"] == GUARD_ACTOR and back["from"] == bad and back["to"] == first, back
    assert "failure_rate" in back["reason"], back
    watch = rollout()["watch"]
    tripped = watch if watch["state"] == "tripped" else watch["last"]
    assert tripped["state"] == "tripped" and tripped["version"] == bad and tripped["previous"] == first, watch
    failure = next(g for g in tripped["guards"] if g["guard"] == "failure_rate")
    assert failure["new"] > failure["limit"] and failure["old"] == 0
    shown = run_cli(settings_env(services.settings), "rollout", "status", "titanic")
    assert shown.returncode == 0 and f"move {first} -> {bad}" in shown.stdout and "tripped" in shown.stdout
    assert "failure_rate" in shown.stdout, shown.stdout
    # nothing accepted was lost: every job ended; only the bad version's failed, and the first's all succeeded
    ended = [client.get(f"/api/jobs/{job['id']}?wait=10").get_json() for job in jobs]
    assert [job for job in ended if job["state"] not in ("succeeded", "failed")] == []
    assert {job["version"] for job in ended if job["state"] == "failed"} == {bad}
    assert [job for job in ended if job["version"] == first and job["state"] != "succeeded"] == []
    # a good version passes its window (the shipped 200 jobs) and stays
    assert client.put("/api/models/titanic/aliases/production", json={"version": good}).status_code == 200
    submit_until(client, lambda: (rollout()["watch"] or {}).get("state") == "passed", 300, jobs)
    assert registry.resolve("titanic", "production") == good
    passed = rollout()["watch"]
    assert passed["version"] == good and passed["jobs"] >= 200 and passed["previous"] == first
    assert all(g["new"] <= g["limit"] for g in passed["guards"])


def test_a_canary_advances_while_its_guards_hold_and_a_bad_one_is_stopped(services: Services,
                                                                          titanic_draft: Draft) -> None:
    first = publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    good = publish(services, titanic_draft, "titanic", titanic_draft.pipeline, promote=False, tag=1)
    bad = publish(services, titanic_draft, "titanic", Broken(titanic_draft.pipeline), promote=False, tag=2)
    registry = Registry.from_settings(services.settings)
    services.worker("records")
    client = create_app(services.settings).test_client()
    jobs: list[dict[str, Any]] = []
    submit_until(client, lambda: len(jobs) >= 30, 120, jobs)
    # a bad canary is stopped by its guards; production never moves, and the canary takes nothing more
    set_ = client.put("/api/models/titanic/canary", json={"version": bad, "percent": 50, "steps": [100],
                                                          "window_jobs": 40})
    assert set_.status_code == 200, set_.get_json()

    def canary() -> dict[str, Any] | None:
        found: dict[str, Any] | None = client.get("/api/models/titanic/canary").get_json()["canary"]
        return found

    submit_until(client, lambda: (canary() or {}).get("state") == "stopped", 180, jobs)
    assert "failure_rate" in (canary() or {})["reason"] and registry.resolve("titanic", "production") == first
    after: list[dict[str, Any]] = []  # a gateway reads the canary once a second: a new one reads it now
    submit_until(create_app(services.settings).test_client(), lambda: len(after) >= 50, 60, after)
    assert {job["version"] for job in after} == {first}
    # a good canary advances 10 -> 50 -> 100 and becomes production, by the canary, then guarded like any move
    set_ = client.put("/api/models/titanic/canary", json={"version": good, "percent": 10, "steps": [50, 100],
                                                          "window_jobs": 30})
    assert set_.status_code == 200 and set_.get_json()["canary"]["steps"] == [50, 100]
    seen: set[float] = set()

    def promoted() -> bool:
        seen.add((canary() or {}).get("percent", 100))
        return registry.resolve("titanic", "production") == good

    submit_until(client, promoted, 300, jobs)
    assert {10, 50} <= seen, seen
    move = registry.history("titanic", "production")[-1]
    assert move["by"] == "canary" and move["from"] == first and move["to"] == good
    assert canary() is None
    submit_until(client, lambda: (client.get("/api/models/titanic/rollout").get_json()["watch"] or {}).get(
        "state") == "watching", 60, jobs)  # its promotion is watched like any other
