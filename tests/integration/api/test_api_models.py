"""Alias moves over HTTP join the registry's history; rollback over HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from api.app import create_app
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from tests.conftest import Services

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


def test_alias_moves_and_rollback_over_http(services: Services, titanic_draft: Draft) -> None:
    registry = Registry.from_settings(services.settings)
    for tag in (1, 2):
        registry.publish(dataclasses.replace(titanic_draft, metrics={**titanic_draft.metrics, "tag": tag}))
    client = create_app(services.settings).test_client()
    moved = client.put("/api/models/titanic/aliases/production", json={"version": 1})
    assert moved.status_code == 200 and moved.get_json()["aliases"] == {"production": 1}
    moved = client.put("/api/models/titanic/aliases/production", json={"version": 2, "reason": "better"})
    assert moved.get_json()["move"]["from"] == 1
    assert client.get("/api/models/titanic").get_json()["current"] == {"version": 2, "alias": "production"}
    back = client.post("/api/models/titanic/rollback", json={})
    assert back.status_code == 200 and back.get_json()["move"]["to"] == 1
    history = registry.history("titanic", "production")
    assert [(m["from"], m["to"], m["by"], m["kind"]) for m in history] == [
        (None, 1, "local", "move"), (1, 2, "local", "move"), (2, 1, "local", "rollback")]
    refused = client.put("/api/models/titanic/aliases/production", json={"version": 1, "by": "mallory"})
    assert refused.status_code == 400 and refused.get_json()["field"] == "by"  # never client text
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


def test_readiness_and_listing_with_a_broken_bundle(services: Services, titanic_draft: Draft) -> None:
    registry = Registry.from_settings(services.settings)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    other = dataclasses.replace(titanic_draft, model="passengers",
                                schema=dataclasses.replace(titanic_draft.schema, model="passengers"))
    registry.set_alias("passengers", "production", registry.publish(other).version)
    client = create_app(services.settings).test_client()
    assert client.get("/readyz").status_code == 200
    # One changed byte in the served pipeline of one model.
    bundle_dir = Path(registry.store.url) / "passengers" / registry.entry("passengers", 1)["bundle"]
    pipeline = bundle_dir / "model.joblib"
    pipeline.write_bytes(pipeline.read_bytes()[:-1] + b"\0")
    client = create_app(services.settings).test_client()  # a fresh gateway: nothing verified yet
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert set(ready.get_json()["models"]) == {"passengers"}
    assert ready.get_json()["models"]["passengers"]["code"] == "integrity"
    listed = {m["name"]: m for m in client.get("/api/models").get_json()["models"]}
    assert listed["titanic"]["aliases"] == {"production": 1}  # the other model is still listed
    # A truncated alias file: a clear code naming the file, not "internal".
    alias_file = Path(registry.store.url) / "passengers" / "aliases" / "production.json"
    alias_file.write_bytes(alias_file.read_bytes()[:10])
    listed = {m["name"]: m for m in client.get("/api/models").get_json()["models"]}
    assert listed["passengers"]["error"]["code"] == "registry_corrupt"
    answer = client.post("/api/models/passengers/jobs", json=RECORD)
    assert answer.status_code == 500 and answer.get_json()["code"] == "registry_corrupt"
    assert answer.get_json()["file"] == "passengers/aliases/production.json"


def test_readiness_without_a_registry(services: Services) -> None:
    client = create_app(services.settings).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "holds no models" in ready.get_json()["detail"]


def test_cancel_applies_to_queued_jobs_only(services: Services, titanic_draft: Draft) -> None:
    registry = Registry.from_settings(services.settings)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    client = create_app(services.settings).test_client()
    queued = client.post("/api/models/titanic/jobs", json=RECORD).get_json()["id"]
    assert client.delete(f"/api/jobs/{queued}").get_json()["state"] == "cancelled"
    again = client.delete(f"/api/jobs/{queued}")
    assert again.status_code == 409 and again.get_json()["state"] == "cancelled"
    services.worker("records")
    done = client.post("/api/models/titanic/jobs?wait=20", json=RECORD).get_json()
    assert done["state"] == "succeeded"
    refused = client.delete(f"/api/jobs/{done['id']}")
    assert refused.status_code == 409 and refused.get_json()["state"] == "succeeded"
    assert client.get(f"/api/jobs/{queued}").get_json()["state"] == "cancelled"  # never scored after all
