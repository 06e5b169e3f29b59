"""A canary, shown: a second version takes its percent of 10,000 unpinned jobs (within 2 points), a client's key
always lands on the same side, pinned requests are never rerouted, every job names its version, and ending the
canary sends everything to production again. Jobs are only queued here (no worker): routing happens at
submission."""

from __future__ import annotations

from collections import Counter
from typing import Any

from api.app import create_app
from batcomputer.models.bundle import Draft
from tests.conftest import Services
from tests.pipelines import publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


def versions_of(client: Any, count: int, query: str = "") -> Counter[int]:
    found: Counter[int] = Counter()
    for _ in range(count):
        answer = client.post(f"/api/models/titanic/jobs{query}", json=RECORD)
        assert answer.status_code == 202, answer.get_json()
        found[answer.get_json()["version"]] += 1
    return found


def test_a_canary_takes_its_share_sticky_by_key_and_never_a_pinned_request(services: Services,
                                                                           titanic_draft: Draft) -> None:
    first = publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    second = publish(services, titanic_draft, "titanic", titanic_draft.pipeline, promote=False, tag=1)
    client = create_app(services.settings).test_client()
    assert client.get("/api/models/titanic/canary").get_json() == {"model": "titanic", "production": first,
                                                                   "canary": None}
    refused = client.put("/api/models/titanic/canary", json={"version": second, "percent": 100})
    assert refused.status_code == 400 and refused.get_json()["field"] == "percent"
    assert client.put("/api/models/titanic/canary", json={"version": first, "percent": 10}).get_json()[
        "field"] == "version"  # production itself
    assert client.put("/api/models/titanic/canary", json={"version": 99, "percent": 10}).status_code == 404
    set_ = client.put("/api/models/titanic/canary", json={"version": second, "percent": 10})
    assert set_.status_code == 200 and set_.get_json()["canary"]["version"] == second
    split = versions_of(client, 10_000)
    assert set(split) == {first, second}
    assert abs(100 * split[second] / 10_000 - 10) <= 2, split
    # a key lands on one side every time; over many keys, about the share
    sides = {}
    for n in range(400):
        seen = versions_of(client, 3, f"?key=customer-{n}")
        assert len(seen) == 1, seen
        sides[n] = next(iter(seen))
    assert 20 <= sum(1 for version in sides.values() if version == second) <= 60
    # pinned: a version or an alias named is never rerouted
    assert versions_of(client, 300, f"?version={first}") == Counter({first: 300})
    assert versions_of(client, 300, "?alias=production") == Counter({first: 300})
    job = client.post("/api/models/titanic/jobs?key=customer-" + str(next(n for n, v in sides.items()
                                                                          if v == second)), json=RECORD).get_json()
    assert job["version"] == second and job["alias"] == "canary"
    assert client.delete("/api/models/titanic/canary").get_json()["canary"] is None
    assert client.delete("/api/models/titanic/canary").status_code == 404
    # the gateway reads the canary at most once a second: a new app reads it now
    assert versions_of(create_app(services.settings).test_client(), 500) == Counter({first: 500})
