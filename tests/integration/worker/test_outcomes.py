"""Outcomes, shown: a client posts what really happened for 2,000 records it had scored (with a real worker and
capture on); invalid items are refused one by one while the valid ones are kept, sending them again changes
nothing, another key's jobs are out of reach, and the monitor's live log loss and accuracy equal what pandas
computes from the same rows."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from api.app import create_app
from batcomputer.jobqueue.connection import redis_client
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.monitoring.monitor import watch
from batcomputer.monitoring.outcomes import OutcomeStore
from batcomputer.monitoring.store import MonitorStore
from tests.conftest import Services
from tests.pipelines import publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


@pytest.fixture
def scored(services: Services, titanic_draft: Draft, tmp_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    services.settings = dataclasses.replace(services.settings, capture_root=str(tmp_path / "capture"))
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    services.worker("records")
    client = create_app(services.settings).test_client()
    jobs = []
    for n in range(40):
        records = [{**RECORD, "pclass": 1 + (n + i) % 3, "sex": ("male", "female")[(n * i) % 2],
                    "age": float(1 + (7 * n + i) % 79)} for i in range(50)]
        job = client.post("/api/models/titanic/jobs?wait=30", json={"records": records}).get_json()
        assert job["state"] == "succeeded", job
        jobs.append({**job, "records": records})
    return client, jobs


def truth_of(record: dict[str, Any], n: int) -> str:
    """What happened: a rule the model does not know exactly (women and children first, and some noise)."""
    lucky = record["sex"] == "female" or record["age"] < 12
    return "survived" if lucky != (n % 7 == 0) else "died"


def test_outcomes_join_captured_predictions_into_live_quality_equal_to_pandas(
        services: Services, scored: tuple[Any, list[dict[str, Any]]]) -> None:
    client, jobs = scored
    outcomes = [{"job": job["id"], "index": i, "label": truth_of(record, n)}
                for job in jobs for n, (i, record) in enumerate(enumerate(job["records"]))]
    answer = client.post("/api/models/titanic/outcomes", json={"outcomes": outcomes})
    assert answer.status_code == 200 and answer.get_json()["kept"] == 2_000
    bad = [{"job": "no-such-job", "index": 0, "label": "died"}, {"job": jobs[0]["id"], "index": 50, "label": "died"},
           {"job": jobs[0]["id"], "index": 0, "label": "drowned"}, outcomes[0]]
    refused = client.post("/api/models/titanic/outcomes", json={"outcomes": bad})
    problem = refused.get_json()
    assert refused.status_code == 422 and problem["kept"] == 1
    assert [(p["item"], p["code"]) for p in problem["problems"]] == [(0, "unknown_job"), (1, "unknown_record"),
                                                                    (2, "unknown_label")]
    store = OutcomeStore(redis_client(services.settings), services.settings.key_prefix)
    again = client.post("/api/models/titanic/outcomes", json={"outcomes": outcomes})  # the same, again
    assert again.get_json()["kept"] == 2_000
    assert store.redis.hlen(store.keys.outcomes("titanic")) == 2_000
    services.stop()  # the worker writes the captured records it holds

    registry = Registry.from_settings(services.settings)
    found = watch(services.settings, registry, "titanic", outcomes=store)
    live = found["windows"]["hour"]["1"]["quality"]
    rows = pd.DataFrame([{"p": result["survived_proba"] if outcome["label"] == "survived" else result["died_proba"],
                          "right": result["label"] == outcome["label"], "survived": result["survived_proba"],
                          "happened": float(outcome["label"] == "survived")}
                         for job in jobs for result, outcome in zip(
                             job["results"], [o for o in outcomes if o["job"] == job["id"]], strict=True)])
    assert live["records"] == 2_000
    assert math.isclose(live["log_loss"], float((-rows["p"].map(math.log)).mean()), abs_tol=1e-6)
    assert math.isclose(live["accuracy"], float(rows["right"].mean()), abs_tol=1e-6)
    assert 0.5 < live["roc_auc"] <= 1 and live["holdout"]["log_loss"] is not None
    assert math.isclose(live["brier"], float(((rows["survived"] - rows["happened"]) ** 2).mean()), abs_tol=1e-6)
    assert live["holdout"]["brier"] is not None
    bins = rows.groupby((rows["survived"] * 10).astype(int).clip(upper=9))  # deciles of the predicted probability
    expected = [{"records": len(b), "predicted": b["survived"].mean(), "observed": b["happened"].mean()}
                for _, b in bins]
    assert [b["records"] for b in live["calibration"]["bins"]] == [b["records"] for b in expected]
    for mine, theirs in zip(live["calibration"]["bins"], expected, strict=True):
        assert math.isclose(mine["predicted"], theirs["predicted"], abs_tol=1e-6)
        assert math.isclose(mine["observed"], theirs["observed"], abs_tol=1e-6)
    gap = sum(b["records"] * abs(b["predicted"] - b["observed"]) for b in expected) / len(rows)
    assert math.isclose(live["calibration"]["error"], gap, abs_tol=1e-5)
    MonitorStore(store.redis, services.settings.key_prefix).save(found)  # as the monitor flow does
    text = client.get("/metrics").get_data(as_text=True)
    for metric in ("log_loss", "accuracy", "roc_auc", "brier"):
        shown = re.search(rf'batcomputer_live_quality{{metric="{metric}",model="titanic",version="1",window="hour"}} '
                          r'(\S+)', text)
        assert shown and math.isclose(float(shown.group(1)), live[metric], abs_tol=1e-9), metric
    assert re.search(r'batcomputer_holdout_quality\{metric="log_loss",model="titanic",version="1"\} ', text)
