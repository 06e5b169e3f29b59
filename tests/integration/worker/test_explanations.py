"""Why this prediction, on every path, through real workers and a real stream consumer with a titanic bundle
trained and published here: jobs, /api/predict, batches and stream entries return each field's contribution
to each output, equal to in-process explanations and adding up to the probabilities; unexplained work carries
none; each version's global importance is in its metrics; a version without a background sample is a clear
422. (The crime model is explained by the README's example, which its test runs on the quick start's stack.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
import redis
from flask.testing import FlaskClient

from api.app import create_app
from batcomputer.jobqueue.streams import StreamStore
from batcomputer.models.explain import explain
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from tests.conftest import Services, own_services, remove_keys, run_cli, settings_env, wait_until
from tests.integration.worker.test_worker_batches import final, output_of, titanic_table, upload
from tests.pipelines import publish

RECORD = {"pclass": 3, "sex": "male", "age": 40.0, "sibsp": 1, "parch": 0}


@dataclasses.dataclass
class Explaining:
    services: Services
    client: FlaskClient
    registry: Registry


@pytest.fixture(scope="module")
def stack(titanic_draft: Any, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explaining]:
    services = own_services(tmp_path_factory.mktemp("explain"), redis_base_url)
    settings = services.settings
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    try:
        services.worker("records")
        services.worker("bulk")
        services.start("stream", "stream", "titanic", "--metrics-port=0")
        yield Explaining(services, create_app(settings).test_client(), Registry.from_settings(settings))
    finally:
        services.stop()
        remove_keys(redis_base_url, settings.key_prefix)


def adds_up(explanation: dict[str, Any], result: dict[str, Any]) -> bool:
    return all(abs(explanation["baseline"][output] + sum(contributions.values()) - float(result[output])) < 1e-9
               for output, contributions in explanation["contributions"].items())


def test_jobs_and_predict_explain_each_record_as_in_process(stack: Explaining) -> None:
    for model, record in (("titanic", RECORD),):
        bundle = stack.registry.bundle(model, None, pipeline=True)
        expected = explain(bundle, [record])[0]
        job = stack.client.post(f"/api/models/{model}/jobs?explain=true&wait=20", json=record).get_json()
        assert job["state"] == "succeeded" and job["explain"] is True, job
        result = job["results"][0]
        assert adds_up(result["explanation"], result)
        assert set(result["explanation"]["contributions"][bundle.schema.outputs[1]]) == set(bundle.schema.field_names)
        for output, contributions in expected["contributions"].items():
            for name, value in contributions.items():
                assert abs(result["explanation"]["contributions"][output][name] - value) < 1e-12
        predicted = stack.client.post(f"/api/predict?model={model}&explain=true", json=record)
        assert predicted.status_code == 200
        assert predicted.get_json()["explanation"]["baseline"] == expected["baseline"]
    plain = stack.client.post("/api/models/titanic/jobs?wait=20", json=RECORD).get_json()
    assert "explanation" not in plain["results"][0] and "explain" not in plain


def test_single_records_sent_together_are_explained_together_and_lists_too(stack: Explaining) -> None:
    bundle = stack.registry.bundle("titanic", None, pipeline=True)
    records = [{**RECORD, "age": float(age)} for age in range(10, 70, 3)]
    ids = [stack.client.post("/api/models/titanic/jobs?explain=true", json=r).get_json()["id"] for r in records]
    listed = stack.client.post("/api/models/titanic/jobs?explain=true&wait=30", json={"records": records}).get_json()
    jobs = [stack.client.get(f"/api/jobs/{i}?wait=20").get_json() for i in ids]
    expected = explain(bundle, records)
    scored = score(bundle, records)
    for results in ([j["results"][0] for j in jobs], listed["results"]):
        for result, want, plain in zip(results, expected, scored, strict=True):
            assert result["survived_proba"] == plain["survived_proba"]
            got = result["explanation"]["contributions"]["survived_proba"]
            assert max(abs(got[f] - want["contributions"]["survived_proba"][f]) for f in got) < 1e-12


def test_a_batch_gets_one_contribution_column_per_output_and_field(stack: Explaining) -> None:
    table = titanic_table(1_200)
    ages = table.column("age").to_numpy().copy()
    ages[[5, 1_100]] = 500.0  # invalid: rejected, so unexplained
    table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(ages))
    job = upload(stack.client, "titanic", table, row_group_size=1_200, query="?explain=true")
    done = final(stack.client, job["id"], timeout=300)
    assert done["state"] == "succeeded" and done["rows_failed"] == 2, done
    output = output_of(stack.client, job["id"])
    bundle = stack.registry.bundle("titanic", None, pipeline=True)
    names = [f"explain.{o}.{f}" for o in bundle.schema.outputs for f in bundle.schema.field_names]
    assert [n for n in output.column_names if n.startswith("explain.")] == names
    assert output.column("passenger").to_pylist() == table.column("passenger").to_pylist()
    assert output.column(names[0]).null_count == 2 and output.column(names[0])[5].as_py() is None
    rows = [0, 1, 999, 1_199]
    records = table.select(bundle.schema.field_names).take(pa.array(rows)).to_pylist()
    expected = explain(bundle, records)
    for row, want in zip(rows, expected, strict=True):
        for field in bundle.schema.field_names:
            got = output.column(f"explain.survived_proba.{field}")[row].as_py()
            assert abs(got - want["contributions"]["survived_proba"][field]) < 1e-12
    total = sum(np.asarray(output.column(f"explain.survived_proba.{f}").to_numpy(zero_copy_only=False))[rows]
                for f in bundle.schema.field_names)
    probabilities = np.asarray(output.column("survived_proba").to_numpy(zero_copy_only=False))[rows]
    np.testing.assert_allclose(total + expected[0]["baseline"]["survived_proba"], probabilities, atol=1e-9, rtol=0)


def test_a_stream_entry_that_asks_is_explained(stack: Explaining) -> None:
    settings = stack.services.settings
    store = StreamStore(redis.Redis.from_url(settings.redis_url or ""), settings.key_prefix, "titanic",
                        settings.stream_maxlen)
    asked = stack.client.post("/api/models/titanic/stream?explain=true", json=RECORD).get_json()["ids"]
    plain = store.append([orjson.dumps(RECORD)], settings.stream_max_backlog)  # a producer writing XADD itself
    wait_until(lambda: store.redis.xlen(store.output) >= 2, 60, "two stream outputs")
    found = {f[b"in_id"].decode(): {k.decode(): v.decode() for k, v in f.items()}
             for _, f in store.redis.xrange(store.output, "-", "+")}
    explanation = orjson.loads(found[asked[0]]["explanation"])
    assert adds_up(explanation, found[asked[0]])
    assert "explanation" not in found[plain[0]]


def test_global_importance_is_in_each_versions_metrics_the_api_and_the_cli(stack: Explaining) -> None:
    detail = stack.client.get("/api/models/titanic").get_json()
    importance = detail["metrics"]["importance"]["survived_proba"]
    assert set(importance) == {"pclass", "sex", "age", "sibsp", "parch"}
    assert max(importance, key=importance.get) == "sex"  # the passenger list's best-known fact
    assert all(value > 0 for value in importance.values())
    assert detail["versions"][-1]["importance"] == importance and detail["versions"][-1]["explainable"] is True
    shown = orjson.loads(run_cli(settings_env(stack.services.settings), "models", "show", "titanic").stdout)
    assert shown["metrics"]["importance"]["survived_proba"] == importance


def test_a_version_without_a_background_sample_is_refused_with_422(stack: Explaining, titanic_draft: Any,
                                                                    tmp_path: Any) -> None:
    own = dataclasses.replace(stack.services.settings, registry=str(tmp_path / "registry"))  # not the shared one
    old = dataclasses.replace(titanic_draft, background=None, metrics={k: v for k, v in titanic_draft.metrics.items()
                                                                      if k != "importance"})
    publish(dataclasses.make_dataclass("Own", ["settings"])(own), old, "unexplained", titanic_draft.pipeline)
    client = create_app(own).test_client()
    refused = client.post("/api/models/unexplained/jobs?explain=true", json=RECORD)
    assert refused.status_code == 422, refused.get_json()
    problem = refused.get_json()
    assert problem["code"] == "not_explainable" and problem["field"] == "explain"
    assert "unexplained@1" in problem["detail"]
    assert client.post("/api/models/unexplained/jobs?explain=maybe", json=RECORD).status_code == 400
    assert client.post("/api/models/unexplained/jobs", json=RECORD).status_code == 202  # unexplained: as ever
