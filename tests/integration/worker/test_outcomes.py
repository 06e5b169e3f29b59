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


def test_outcomes_by_the_clients_own_keys_of_jobs_predictions_stream_entries_and_batch_rows(
        services: Services, titanic_draft: Draft, tmp_path: Path) -> None:
    import pyarrow.dataset as ds

    from batcomputer.jobqueue.streams import StreamStore
    from tests.integration.worker.test_worker_batches import titanic_table, upload

    root = tmp_path / "capture"
    services.settings = dataclasses.replace(services.settings, capture_root=str(root),
                                            capture_rates="job=1,predict=1,stream=1,batch=1")
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    services.worker("records")
    services.worker("bulk")
    services.start("stream", "stream", "titanic", "--metrics-port=0")
    client = create_app(services.settings).test_client()
    listed = client.post("/api/models/titanic/jobs?wait=20", json={"records": [RECORD] * 3,
                                                                    "keys": ["ann", "bob", None]}).get_json()
    assert listed["state"] == "succeeded" and listed["keys"] == ["ann", "bob", None]
    one = client.post("/api/models/titanic/jobs?wait=20&key=cat", json=RECORD).get_json()
    assert one["state"] == "succeeded"
    assert client.post("/api/predict?model=titanic&key=dan", json=RECORD).status_code == 200
    appended = client.post("/api/models/titanic/stream", json={"records": [RECORD, RECORD], "keys": ["eve", "fay"]})
    assert appended.status_code == 202
    table = titanic_table(300)
    batch = upload(client, "titanic", table, 100, "?key_column=passenger")
    # what cannot be a key is refused up front, naming where
    assert client.post("/api/models/titanic/jobs", json={"records": [RECORD], "keys": ["a", "b"]}).get_json()[
        "field"] == "keys"
    assert client.post("/api/models/titanic/jobs?key=", json=RECORD).get_json()["field"] == "key"
    assert client.post("/api/models/titanic/jobs?key=x", json={"records": [RECORD] * 2}).get_json()["field"] == "key"
    from tests.conftest import wait_until

    wait_until(lambda: client.get(f"/api/jobs/{batch['id']}").get_json()["state"] == "succeeded", 120, "the batch")
    store = StreamStore(redis_client(services.settings), services.settings.key_prefix, "titanic")
    wait_until(lambda: store.redis.xlen(store.output) >= 2, 60, "stream outputs")
    outputs = [fields for _, fields in store.redis.xrange(store.output)]
    assert {fields[b"key"] for fields in outputs} == {b"eve", b"fay"}  # the key comes back with each output
    services.stop()  # every process writes what it captured, and indexes its keys
    captured = ds.dataset(str(root), format="parquet", partitioning="hive").to_table().to_pylist()
    keys = sorted(row["key"] for row in captured if row["key"])
    assert keys == sorted(["ann", "bob", "cat", "dan", "eve", "fay", *table.column("passenger").to_pylist()])
    told = [{"key": key, "label": "survived" if n % 2 else "died"} for n, key in enumerate(keys)]
    rows, named = [t for t in told if t["key"].startswith("p0")], [t for t in told if not t["key"].startswith("p0")]
    answer = client.post("/api/models/titanic/outcomes",
                         json={"outcomes": [*named, {"key": "nobody", "label": "died"}]})
    problem = answer.get_json()
    assert answer.status_code == 422 and problem["kept"] == len(named) == 6
    assert [(p["item"], p["field"], p["code"]) for p in problem["problems"]] == [(6, "key", "unknown_key")]
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)  # the batch rows' outcomes as a file: key and label columns
    sent = client.post("/api/models/titanic/outcomes", data=sink.getvalue(),
                       headers={"Content-Type": "application/vnd.apache.parquet"})
    assert sent.status_code == 200 and sent.get_json()["kept"] == len(rows) == 300
    refused = client.post("/api/models/titanic/outcomes", data=b"not parquet",
                          headers={"Content-Type": "application/vnd.apache.parquet"})
    assert refused.status_code == 400 and refused.get_json()["field"] == "body"
    found = watch(services.settings, Registry.from_settings(services.settings), "titanic",
                  outcomes=OutcomeStore(redis_client(services.settings), services.settings.key_prefix))
    hour = found["windows"]["hour"]["1"]
    assert hour["quality"]["records"] == len(told)  # every keyed record joined
    # outcomes that ignore the model (alternate labels) make live log loss far worse than the holdout's: alert
    assert hour["quality"]["log_loss"] > hour["quality"]["holdout"]["log_loss"] + hour["thresholds"]["quality_margin"]
    assert found["state"] == "alert"
    assert {"version": 1, "metric": "log_loss", "live": hour["quality"]["log_loss"],
            "holdout": hour["quality"]["holdout"]["log_loss"],
            "margin": hour["thresholds"]["quality_margin"]} in found["alerts"]


def test_a_client_key_names_only_its_own_tenants_record(services: Services, titanic_draft: Draft,
                                                         tmp_path: Path) -> None:
    """An attacker with a score key who sends records with the keys another tenant uses must neither take
    over those keys (the victim's outcomes still reach the victim's records) nor reach the victim's records."""
    from batcomputer.jobqueue.jobs import JobStore
    from batcomputer.jobqueue.keyspace import QUEUE_RECORDS
    from batcomputer.monitoring.capture import Capture

    settings = services.settings
    version = publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    bundle = Registry.from_settings(settings).bundle("titanic", version)
    client = redis_client(settings)
    store = OutcomeStore(client, settings.key_prefix)
    jobs = JobStore.from_settings(client, settings)
    capture = Capture(str(tmp_path / "capture"), outcomes=store)
    result = {"died": 0.5, "survived": 0.5, "label": "died", "warnings": []}
    for job_id, owner in (("victim-job", "victim"), ("attacker-job", "attacker")):  # the attacker's comes later
        jobs.create(job_id, "titanic", bundle.version, bundle.sha256, [RECORD], QUEUE_RECORDS,
                    extra={"owner": owner})
        capture.add(bundle, "job", [job_id], [0], [RECORD], [result], keys=["order-17"], owner=owner)
        assert capture.flush(force=True) == 1
    labels = ("died", "survived")
    assert store.record("titanic", labels, [{"key": "order-17", "label": "survived"}], "victim") == (1, [])
    assert store.lookup("titanic", ["victim-job|0", "attacker-job|0"]) == ["survived", None]
    kept, problems = store.record("titanic", labels, [{"key": "order-17", "label": "died"}], "attacker")
    assert kept == 1 and not problems  # the attacker's own record, under its own key
    assert store.lookup("titanic", ["victim-job|0", "attacker-job|0"]) == ["survived", "died"]
    kept, problems = store.record("titanic", labels, [{"key": "order-18", "label": "died"}], "attacker")
    assert kept == 0 and problems[0]["code"] == "unknown_key"
