"""The cross-origin policy: pages of other origins cannot change anything (not even with a bodiless or
form post, which browsers send without asking); listed origins get CORS answers, never with credentials."""

from __future__ import annotations

import dataclasses
import io

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import Services

CRIME = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
FOREIGN = "https://evil.example"
LISTED = "https://dashboard.example"


@pytest.fixture
def client(stack: tuple[str, Settings, Services]) -> FlaskClient:
    _, settings, _ = stack
    return create_app(dataclasses.replace(settings, cors_origins=LISTED)).test_client()


def test_a_foreign_page_cannot_move_an_alias_or_submit_work(client: FlaskClient,
                                                             stack: tuple[str, Settings, Services]) -> None:
    _, settings, _ = stack
    before = Registry.from_settings(settings).aliases("crime")
    for method, path, kwargs in (
            ("post", "/api/models/crime/rollback", {}),  # no body, no Content-Type: a "simple" request
            ("post", "/api/models/crime/rollback", {"data": "{}", "content_type": "text/plain"}),
            ("put", "/api/models/crime/aliases/production", {"json": {"version": 1}}),
            ("post", "/api/models/crime/jobs", {"json": CRIME}),
            ("post", "/api/models/crime/batches", {"data": {"file": (io.BytesIO(b"PAR1"), "x.parquet")},
                                                   "content_type": "multipart/form-data"}),
            ("delete", "/api/jobs/0123", {})):
        refused = getattr(client, method)(path, headers={"Origin": FOREIGN}, **kwargs)
        assert refused.status_code == 403, path
        assert refused.get_json()["code"] == "cross_origin_refused" and refused.get_json()["field"] == "Origin"
        assert "Access-Control-Allow-Origin" not in refused.headers
    assert Registry.from_settings(settings).aliases("crime") == before
    readable = client.get("/api/models/crime", headers={"Origin": FOREIGN})
    assert readable.status_code == 200 and "Access-Control-Allow-Origin" not in readable.headers  # browser hides it


def test_the_gateways_own_pages_and_listed_origins_may_call_it(client: FlaskClient) -> None:
    own = client.post("/api/models/crime/jobs", json=CRIME, headers={"Origin": "http://localhost"})
    assert own.status_code == 202
    preflight = client.options("/api/models/crime/jobs", headers={
        "Origin": LISTED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    listed = client.post("/api/models/crime/jobs", json=CRIME, headers={"Origin": LISTED})
    assert listed.status_code == 202 and listed.headers["Access-Control-Allow-Origin"] == LISTED
    assert "Location" in listed.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in listed.headers
    foreign_preflight = client.options("/api/models/crime/jobs", headers={
        "Origin": FOREIGN, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in foreign_preflight.headers


def test_the_local_profile_answers_only_its_loopback_names(client: FlaskClient) -> None:
    """A page whose DNS name rebinds to 127.0.0.1 is same-origin to the browser: its Host header gives it away
    (issue 30's probe moved an alias this way, with no key)."""
    rebound = client.put("/api/models/crime/aliases/production", json={"version": 1},
                         headers={"Host": "attacker.example:8000", "Origin": "http://attacker.example:8000"})
    assert rebound.status_code == 421 and rebound.get_json()["code"] == "host_refused"
    assert client.get("/api/models", headers={"Host": "attacker.example:8000"}).status_code == 421
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "localhost"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 200, host
