"""Alias moves over HTTP join the registry's history; rollback over HTTP."""

from __future__ import annotations

import dataclasses

from api.app import create_app
from batcomputer.bundle import Draft
from batcomputer.registry import Registry
from tests.conftest import Services


def test_alias_moves_and_rollback_over_http(services: Services, titanic_draft: Draft) -> None:
    registry = Registry.from_settings(services.settings)
    for tag in (1, 2):
        registry.publish(dataclasses.replace(titanic_draft, metrics={**titanic_draft.metrics, "tag": tag}))
    client = create_app(services.settings).test_client()
    moved = client.put("/api/models/titanic/aliases/production", json={"version": 1, "by": "alice"})
    assert moved.status_code == 200 and moved.get_json()["aliases"] == {"production": 1}
    moved = client.put("/api/models/titanic/aliases/production", json={"version": 2, "reason": "better"})
    assert moved.get_json()["move"]["from"] == 1
    assert client.get("/api/models/titanic").get_json()["current"] == {"version": 2, "alias": "production"}
    back = client.post("/api/models/titanic/rollback", json={})
    assert back.status_code == 200 and back.get_json()["move"]["to"] == 1
    history = registry.history("titanic", "production")
    assert [(m["from"], m["to"], m["by"], m["kind"]) for m in history] == [
        (None, 1, "alice", "move"), (1, 2, "api", "move"), (2, 1, "api", "rollback")]
    assert history[1]["reason"] == "better"


def test_bad_alias_moves_are_refused_clearly(services: Services, titanic_draft: Draft) -> None:
    Registry.from_settings(services.settings).publish(titanic_draft)
    client = create_app(services.settings).test_client()
    missing = client.put("/api/models/titanic/aliases/production", json={"version": 5})
    assert missing.status_code == 404 and "no version 5" in missing.get_json()["detail"]
    wrong = client.put("/api/models/titanic/aliases/production", json={"version": "1"})
    assert wrong.status_code == 400 and wrong.get_json()["field"] == "version"
    nothing = client.post("/api/models/titanic/rollback", json={"alias": "staging"})
    assert nothing.status_code == 404 and nothing.get_json()["code"] == "alias_not_found"
    bad_name = client.put("/api/models/titanic/aliases/Prod!", json={"version": 1})
    assert bad_name.status_code == 400


def test_a_long_wait_without_workers_returns_the_queued_job(services: Services, titanic_draft: Draft) -> None:
    """?wait longer than the Redis client's socket timeout must still answer 202, not a 503."""
    registry = Registry.from_settings(services.settings)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    client = create_app(services.settings).test_client()
    response = client.post("/api/models/titanic/jobs?wait=11", json={"pclass": 1, "sex": "female", "sibsp": 0,
                                                                    "parch": 0})
    assert response.status_code == 202
    assert response.get_json()["state"] == "queued"
