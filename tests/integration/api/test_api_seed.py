"""The seed's API, unchanged for its clients: /api/predict, /api/predict/params, /api/info."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import requests

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]
CRIME = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}


def test_predict_answers_the_named_outputs(stack: Stack) -> None:
    base, _, _ = stack
    response = requests.post(f"{base}/api/predict", json=CRIME, timeout=15)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"caughtProb", "notCaughtProb"}
    assert 0 < body["caughtProb"] < 1 and body["caughtProb"] + body["notCaughtProb"] == pytest.approx(1)
    titanic = requests.post(f"{base}/api/predict?model=titanic",
                            json={"pclass": 1, "sex": "female", "age": 30, "sibsp": 0, "parch": 0}, timeout=15)
    assert set(titanic.json()) == {"died_proba", "survived_proba"}
    assert titanic.json()["survived_proba"] > 0.5


def test_predict_errors_are_400_with_the_seed_error_message(stack: Stack) -> None:
    base, _, _ = stack
    bad = requests.post(f"{base}/api/predict", json={**CRIME, "crime": "Jaywalking"}, timeout=15)
    assert bad.status_code == 400
    body = bad.json()
    assert "crime: 'Jaywalking' is not allowed" in body["error"]
    assert body["problems"][0]["allowed"][0] == "Bicycle theft" and body["type"].endswith("/validation")
    malformed = requests.post(f"{base}/api/predict", data=b"{oops", timeout=15,
                              headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
    missing = requests.post(f"{base}/api/predict", json={"force": "West Yorkshire Police"}, timeout=15)
    assert missing.status_code == 400 and {p["field"] for p in missing.json()["problems"]} == {"crime", "month"}


def test_predict_keeps_the_status_of_access_refusals(stack: Stack, tmp_path: Path) -> None:
    """Only bad input becomes the seed's 400: a missing key stays 401 (issue 30 found a 400)."""
    from api.app import create_app
    from tests.integration.api.test_auth import create_key

    _, base, _ = stack
    settings = dataclasses.replace(base, profile="production", keys_file=str(tmp_path / "keys.json"))
    create_key(settings, "shop", "score")
    refused = create_app(settings).test_client().post("/api/predict", json=CRIME)
    assert refused.status_code == 401 and refused.get_json()["code"] == "unauthorized"


def test_params_lists_categories_or_zero(stack: Stack) -> None:
    base, settings, _ = stack
    params = requests.get(f"{base}/api/predict/params", timeout=10).json()
    schema = Registry.from_settings(settings).schema("crime")
    assert params == {"force": list(schema.field("force").categories or ()),
                      "crime": list(schema.field("crime").categories or ()), "month": 0,
                      "district": list(schema.field("district").categories or ())}


def test_info_says_alive_with_the_model_metadata(stack: Stack) -> None:
    base, _, _ = stack
    info = requests.get(f"{base}/api/info", timeout=10).json()
    assert info["status"] == "alive"
    assert info["metadata"]["name"] == "crime" and info["metadata"]["version"] >= 1
    assert info["metadata"]["outputs"] == ["notCaughtProb", "caughtProb"]
