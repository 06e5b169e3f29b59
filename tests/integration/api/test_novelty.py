"""Honest predictions: values the training data never or rarely held are scored with warnings naming the
field and why (the crime model saw one month only), through the job API, the seed's API on request, and
stream outputs; familiar records carry none."""

from __future__ import annotations

import dataclasses

import requests

from batcomputer.models.novelty import OUTSIDE, RARE, UNSEEN, Novelty
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]
CRIME = {"force": "West Yorkshire Police", "crime": "Burglary"}


def test_the_crime_model_warns_about_months_its_training_data_never_held(stack: Stack) -> None:
    base, settings, _ = stack
    schema = Registry.from_settings(settings).bundle("crime").schema
    held = schema.profile["month"]["quantiles"]["0.0"]
    assert held == schema.profile["month"]["quantiles"]["1.0"]  # one month of data.police.uk
    other = 3 if held != 3 else 4
    unusual = requests.post(f"{base}/api/models/crime/jobs?wait=20", json={**CRIME, "month": other},
                            timeout=30).json()
    [warning] = unusual["results"][0]["warnings"]
    assert warning["field"] == "month" and warning["code"] == OUTSIDE
    assert f"month={other}" in warning["message"] and f"only month={held:g}" in warning["message"]
    usual = requests.post(f"{base}/api/models/crime/jobs?wait=20", json={**CRIME, "month": int(held)},
                          timeout=30).json()
    assert usual["results"][0]["warnings"] == []
    seed = requests.post(f"{base}/api/predict", json={**CRIME, "month": other}, timeout=30).json()
    assert set(seed) == {"caughtProb", "notCaughtProb"}  # the seed's shape unless asked
    asked = requests.post(f"{base}/api/predict?warnings=true", json={**CRIME, "month": other}, timeout=30).json()
    assert asked["warnings"][0]["field"] == "month"


def test_unseen_and_rare_categories_are_named(stack: Stack) -> None:
    _, settings, _ = stack
    schema = Registry.from_settings(settings).bundle("crime").schema
    frequencies = dict(schema.profile["crime"]["frequencies"])
    common = max(frequencies, key=lambda c: frequencies[c])
    rare, unseen = [c for c in frequencies if c != common][:2]
    profile = {**schema.profile, "crime": {**schema.profile["crime"],
                                           "frequencies": {**frequencies, rare: 0.0004, unseen: 0.0}}}
    novelty = Novelty(dataclasses.replace(schema, profile=profile))
    month = schema.profile["month"]["quantiles"]["0.0"]
    assert novelty.check({**CRIME, "crime": common, "month": month, "district": None}) == []
    [found] = novelty.check({**CRIME, "crime": rare, "month": month, "district": None})
    assert (found["field"], found["code"]) == ("crime", RARE) and "0.040%" in found["message"]
    [found] = novelty.check({**CRIME, "crime": unseen, "month": month, "district": None})
    assert (found["field"], found["code"]) == ("crime", UNSEEN) and "never occurred" in found["message"]
