"""The Prefect flows under Prefect's test harness, on real data: retrain publishes and promotes, a worse
challenger and one that drops a category are published but not promoted, bad data stops the run before
training, unchanged inputs publish nothing, months arriving one at a time bring new versions and drift,
and score-batch runs a file through the live stack."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect.testing.utilities import prefect_test_harness

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from orchestration.flows import RetrainRefused, promote, retrain, rollback, score_batch
from tests.conftest import Services
from tests.integration.api.test_api_batches import crime_table

SPECS = Path(__file__).resolve().parents[3] / "training" / "specs"
MONTHS = ("2016-07-west-yorkshire-street.csv", "2017-07-west-yorkshire-street.csv",
          "2018-07-west-yorkshire-street.csv")


@pytest.fixture(scope="module", autouse=True)
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    with prefect_test_harness(server_startup_timeout=120):
        yield


def variant(tmp_path: Path, name: str, old: str, new: str) -> str:
    """A copy of a spec with one change, as a file (the flow takes a spec path)."""
    text = (SPECS / f"{name}.toml").read_text()
    assert old in text
    path = tmp_path / f"{name}-variant.toml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


def test_retrain_publishes_promotes_and_then_publishes_nothing_for_unchanged_inputs(settings: Settings,
                                                                                     data_dir: Path) -> None:
    own = dataclasses.replace(settings, data_dir=str(data_dir))
    first = retrain(model="titanic", policy="auto", fetch=False, settings=own)
    assert (first["version"], first["created"], first["promoted"]) == (1, True, True)
    registry = Registry.from_settings(own)
    assert registry.aliases("titanic")["production"] == 1
    move = registry.history("titanic")[-1]
    assert move["by"].startswith("prefect:") and "first version" in move["reason"]
    assert registry.bundle("titanic", 1).manifest["run"]["flow"] == "retrain"
    again = retrain(model="titanic", policy="auto", fetch=False, settings=own)
    assert (again["version"], again["created"]) == (1, False)
    assert registry.versions("titanic") == [1]


def test_a_worse_challenger_is_published_but_never_promoted_automatically(settings: Settings, data_dir: Path,
                                                                           tmp_path: Path) -> None:
    own = dataclasses.replace(settings, data_dir=str(data_dir))
    retrain(model="titanic", policy="auto", fetch=False, settings=own)
    worse = variant(tmp_path, "titanic", 'class = "sklearn.ensemble.HistGradientBoostingClassifier"\n'
                    "params = { max_iter = 150, learning_rate = 0.05, max_leaf_nodes = 15, min_samples_leaf = 20, "
                    "early_stopping = false }",
                    'class = "sklearn.linear_model.LogisticRegression"\nparams = { C = 0.00001 }')
    decision = retrain(model="titanic", policy="auto", spec=worse, fetch=False, settings=own)
    assert decision["created"] and not decision["promoted"]
    assert decision["version"] == 2 and decision["champion"] == 1
    assert "worse than production" in decision["reasons"][0]
    assert decision["metrics"]["log_loss"]["challenger"] > decision["metrics"]["log_loss"]["champion"]
    # Its changed reasoning is there beside its metric: a model this regularised barely uses any field.
    importance = decision["importance"]
    assert set(importance["challenger"]) == set(importance["champion"]) == {"pclass", "sex", "age", "sibsp", "parch"}
    assert max(importance["challenger"].values()) < max(importance["champion"].values()) / 2
    assert Registry.from_settings(own).aliases("titanic")["production"] == 1
    forced = retrain(model="titanic", policy="always", spec=worse, fetch=False, settings=own)
    assert forced["promoted"] and Registry.from_settings(own).aliases("titanic")["production"] == 2
    back = rollback(model="titanic", reason="the forced version is worse", settings=own)
    assert back["to"] == 1 and back["by"].startswith("prefect:")
    moved = promote(model="titanic", version=2, reason="try again", settings=own)
    assert moved["to"] == 2 and [m["kind"] for m in Registry.from_settings(own).history("titanic")] == [
        "move", "move", "rollback", "move"]


def test_a_challenger_that_drops_a_category_is_blocked(settings: Settings, data_dir: Path, tmp_path: Path) -> None:
    own = dataclasses.replace(settings, data_dir=str(data_dir))
    retrain(model="crime", policy="auto", fetch=False, settings=own)
    narrower = variant(tmp_path, "crime", '"Bicycle theft", ', "")
    decision = retrain(model="crime", policy="auto", spec=narrower, fetch=False, settings=own)
    assert decision["created"] and not decision["promoted"]
    assert any("no longer accepts 'Bicycle theft'" in reason for reason in decision["reasons"])
    assert Registry.from_settings(own).aliases("crime")["production"] == 1


def test_data_that_fails_validation_stops_the_run_before_training(settings: Settings, data_dir: Path,
                                                                 tmp_path: Path) -> None:
    own = dataclasses.replace(settings, data_dir=str(data_dir))
    strict = variant(tmp_path, "titanic", "holdout = 0.25", "holdout = 0.25\nmin_rows = 1000000")
    with pytest.raises(RetrainRefused, match=r"only \d+ usable rows \(the spec asks for at least 1000000\)"):
        retrain(model="titanic", policy="auto", spec=strict, fetch=False, settings=own)
    assert "titanic" not in Registry.from_settings(own).models()


def test_months_arriving_one_at_a_time_bring_new_versions_with_their_drift(settings: Settings, data_dir: Path,
                                                                          tmp_path: Path) -> None:
    months = tmp_path / "data"
    (months / "crime").mkdir(parents=True)
    own = dataclasses.replace(settings, data_dir=str(months))
    seen = []
    for month in MONTHS[:2]:
        shutil.copy(data_dir / "crime" / month, months / "crime" / month)  # this month's file is published
        seen.append(retrain(model="crime", policy="auto", fetch=False, settings=own))
    first, second = seen
    assert (first["version"], second["version"]) == (1, 2) and second["created"]
    assert second["champion"] == 1 and {d["field"] for d in second["drift"]} == {"force", "crime", "month",
                                                                                  "district"}
    assert all(d["psi"] is not None and d["psi"] >= 0 for d in second["drift"])
    bundle = Registry.from_settings(own).bundle("crime", 2)
    assert sorted(bundle.manifest["data"]["files"]) == sorted(MONTHS[:2])


def test_score_batch_runs_a_file_through_the_live_stack(stack: tuple[str, Settings, object]) -> None:
    base, settings, _ = stack
    root = Path(settings.storage_roots)
    (root / "flows").mkdir(exist_ok=True)
    pq.write_table(crime_table(Registry.from_settings(settings), 5_000), root / "flows" / "in.parquet")
    job = score_batch(model="crime", input_uri=str(root / "flows" / "in.parquet"),
                      output_uri=str(root / "flows" / "out.parquet"), api_url=base, settings=settings)
    assert job["state"] == "succeeded" and job["rows_total"] == 5_000 and job["rows_failed"] == 3
    assert pq.read_table(root / "flows" / "out.parquet").num_rows == 5_000


def test_a_spec_with_live_days_trains_and_judges_on_captured_records_whose_outcomes_came_back(
        services: Services, data_dir: Path, tmp_path: Path) -> None:
    from api.app import create_app
    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.monitoring.monitor import watch
    from batcomputer.monitoring.outcomes import OutcomeStore
    from batcomputer.monitoring.store import MonitorStore

    own = dataclasses.replace(services.settings, data_dir=str(data_dir), capture_root=str(tmp_path / "capture"))
    services.settings = own
    first = retrain(model="titanic", policy="auto", fetch=False, settings=own)
    assert first["live_rows"] == 0 and first["live_drift"] == []
    services.worker("records")
    client = create_app(own).test_client()
    passengers = [{"pclass": 3, "sex": "male", "age": float(age), "sibsp": 0, "parch": 0} for age in range(20, 70)]
    jobs = [client.post("/api/models/titanic/jobs?wait=20", json={"records": passengers}).get_json()
            for _ in range(4)]
    assert all(job["state"] == "succeeded" for job in jobs)
    told = [{"job": job["id"], "index": i, "label": "survived" if i % 3 == 0 else "died"}
            for job in jobs[:3] for i in range(len(passengers))]  # the fourth job's outcomes never came back
    assert client.post("/api/models/titanic/outcomes", json={"outcomes": told}).get_json()["kept"] == len(told)
    services.stop()  # the worker writes what it captured
    store = OutcomeStore(redis_client(own), own.key_prefix)
    MonitorStore(store.redis, own.key_prefix).save(watch(own, Registry.from_settings(own), "titanic", outcomes=store))
    spec = tmp_path / "titanic-live.toml"
    spec.write_text((SPECS / "titanic.toml").read_text() + "\n[retrain]\nlive_days = 1\n")
    second = retrain(model="titanic", policy="never", spec=str(spec), fetch=False, settings=own)
    assert second["live_rows"] == len(told) and second["created"]  # new data: a new version
    bundle = Registry.from_settings(own).bundle("titanic", second["version"])
    assert bundle.metrics["data"]["live_rows"] == len(told)
    assert {d["field"] for d in second["live_drift"]} == {"pclass", "sex", "age", "sibsp", "parch"}
    assert all(d["records"] == len(passengers) * 4 for d in second["live_drift"])  # every captured record
    without = dataclasses.replace(own, capture_root=None)
    with pytest.raises(RetrainRefused, match="capture is off"):
        retrain(model="titanic", policy="never", spec=str(spec), fetch=False, settings=without)
