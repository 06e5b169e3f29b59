"""Work that hangs is stopped, with the shipped time limits: a model whose pipeline never returns on one input value
(a custom transformer, published through the registry) is served by a real record worker, bulk worker and
stream consumer at once. The hanging job fails with code timeout within its limit and a margin while its
neighbours succeed; a 100,000-row batch rejects exactly its hanging rows; a hanging stream entry is
dead-lettered while the stream flows on; the pools keep their strength; the stopped job is replayed once the
cause is gone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
import redis
from flask.testing import FlaskClient

from api.app import create_app
from batcomputer.jobqueue.records import parse_iso
from batcomputer.jobqueue.streams import StreamStore
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.settings import Settings
from tests.conftest import Services, free_port, own_services, remove_keys, run_cli, settings_env, wait_until
from tests.integration.api.test_metrics import samples, value
from tests.integration.api.test_web import Session
from tests.integration.worker.test_worker_batches import final, output_of, titanic_table, upload
from tests.pipelines import hanging, publish

HANG_AGE = 77.77  # the value the transformer hangs on (generated ages have one decimal: never by chance)
RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}
NEIGHBOURS = 30
FINAL = ("succeeded", "failed", "dead", "cancelled")
MARGIN = 15.0  # seconds beyond a limit that an answer may take on a loaded 2-core machine


@dataclass
class Hanging:
    services: Services
    client: FlaskClient
    flag: str
    plain: Any  # the same model without the hanging step, loaded: what every other record must score
    hung_job: str
    neighbours: list[str]
    batch: str
    batch_table: pa.Table
    hanging_rows: list[int]
    store: StreamStore
    stream_ids: list[str]
    hung_entry: str
    submitted: float


@pytest.fixture(scope="module")
def stack(titanic_draft: Draft, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hanging]:
    """The shipped settings (own Redis prefix, registry and storage), every kind of work started at once so that
    the waits overlap."""
    services = own_services(tmp_path_factory.mktemp("limits"), redis_base_url)
    settings = services.settings
    flag = f"{settings.key_prefix}hang"
    client_redis = redis.Redis.from_url(redis_base_url)
    client_redis.set(flag, "1")
    try:
        publish(services, titanic_draft, "hangs",
                hanging(titanic_draft.pipeline, "age", HANG_AGE, redis_base_url, flag))
        publish(services, titanic_draft, "plain", titanic_draft.pipeline, promote=False)
        plain = Registry.from_settings(settings).bundle("plain", 1, pipeline=True)
        services.worker("records")
        services.worker("bulk")
        services.start("stream", "stream", "hangs", "--metrics-port=0")
        client = create_app(settings).test_client()
        submitted = time.time()
        store = StreamStore(client_redis, settings.key_prefix, "hangs", settings.stream_maxlen)
        entries = [{**RECORD, "age": float(20 + i)} for i in range(40)]
        entries[7] = {**RECORD, "age": HANG_AGE}
        stream_ids = store.append([orjson.dumps(e) for e in entries], settings.stream_max_backlog)
        table = titanic_table(100_000)
        hanging_rows = [10, 50_017, 99_990]
        ages = table.column("age").to_numpy().copy()
        ages[hanging_rows] = HANG_AGE
        table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(ages))
        batch = upload(client, "hangs", table, row_group_size=100_000)["id"]
        hung = client.post("/api/models/hangs/jobs", json={**RECORD, "age": HANG_AGE}).get_json()["id"]
        neighbours = [client.post("/api/models/hangs/jobs", json={**RECORD, "age": float(1 + i)}).get_json()["id"]
                      for i in range(NEIGHBOURS)]
        yield Hanging(services, client, flag, plain, hung, neighbours, batch, table, hanging_rows, store,
                      stream_ids, stream_ids[7], submitted)
    finally:
        client_redis.delete(flag)
        services.stop()
        remove_keys(redis_base_url, settings.key_prefix)


def job_of(client: FlaskClient, job_id: str) -> dict[str, Any]:
    return client.get(f"/api/jobs/{job_id}").get_json()  # type: ignore[no-any-return]


def wait_final(client: FlaskClient, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        jobs = [job_of(client, i) for i in ids]
        return jobs if all(j["state"] in FINAL for j in jobs) else None

    return wait_until(ended, timeout, f"{len(ids)} jobs to end", interval=0.2)  # type: ignore[no-any-return]


def test_the_hanging_job_fails_with_timeout_and_its_neighbours_succeed(stack: Hanging) -> None:
    settings = stack.services.settings
    limit = settings.timeout_records_seconds
    assert limit == 30  # the shipped default
    [hung] = wait_final(stack.client, [stack.hung_job], limit * 2 + MARGIN)
    assert hung["state"] == "failed", hung
    assert hung["error"]["code"] == "timeout" and hung["error"]["limit_seconds"] == limit
    assert "30 s" in hung["error"]["detail"] and "hangs@1" in hung["error"]["detail"]
    took = parse_iso(hung["finished"]) - parse_iso(hung["started"])
    assert limit <= took <= limit + settings.timeout_floor_seconds + MARGIN, took
    assert hung["replayable"] is True
    jobs = wait_final(stack.client, stack.neighbours, 60)
    assert [j["state"] for j in jobs] == ["succeeded"] * NEIGHBOURS
    expected = score(stack.plain, [{**RECORD, "age": float(1 + i)} for i in range(NEIGHBOURS)])
    assert [j["results"][0]["survived_proba"] for j in jobs] == [e["survived_proba"] for e in expected]
    # The pool is whole: the same worker answers at once, nothing was replaced.
    fresh = stack.client.post("/api/models/hangs/jobs?wait=10", json=RECORD).get_json()
    assert fresh["state"] == "succeeded" and fresh["attempts"] == 1
    assert stack.services.workers_alive("records") == 1
    assert all(p.poll() is None for p in stack.services.processes)


def test_a_request_may_ask_for_a_shorter_limit_and_not_for_a_longer_one(stack: Hanging) -> None:
    ceiling = stack.services.settings.timeout_records_seconds
    refused = stack.client.post(f"/api/models/hangs/jobs?timeout={ceiling + 1:g}", json=RECORD)
    assert refused.status_code == 400 and refused.get_json()["field"] == "timeout"
    assert stack.client.post("/api/models/hangs/jobs?timeout=soon", json=RECORD).status_code == 400
    began = time.monotonic()
    job = stack.client.post("/api/models/hangs/jobs?timeout=3&wait=30", json={**RECORD, "age": HANG_AGE}).get_json()
    assert job["state"] == "failed" and job["error"]["code"] == "timeout", job
    assert job["error"]["limit_seconds"] == 3 and job["timeout"] == 3
    assert time.monotonic() - began < 3 + MARGIN
    predicted = stack.client.post("/api/predict?model=hangs&timeout=3", json={**RECORD, "age": HANG_AGE})
    assert predicted.status_code == 504 and predicted.get_json()["code"] == "timeout"


def test_a_batch_rejects_exactly_its_hanging_rows_and_scores_the_rest_like_in_process(stack: Hanging) -> None:
    done = final(stack.client, stack.batch, timeout=300)
    assert done["state"] == "succeeded", done
    assert done["rows_total"] == 100_000 and done["rows_failed"] == len(stack.hanging_rows), done
    output = output_of(stack.client, stack.batch)
    codes = output.column("error_code").to_pylist()
    assert [i for i, code in enumerate(codes) if code is not None] == stack.hanging_rows
    assert {codes[i] for i in stack.hanging_rows} == {"timeout"}
    message = output.column("error").to_pylist()[stack.hanging_rows[0]]
    assert "time limit" in message, message
    fields = stack.plain.schema.field_names
    expected = stack.plain.pipeline.predict_proba(stack.batch_table.select(fields).to_pandas())[:, 1]
    scored = np.asarray(output.column("survived_proba").to_numpy(zero_copy_only=False))
    keep = np.ones(100_000, dtype=bool)
    keep[stack.hanging_rows] = False
    np.testing.assert_allclose(scored[keep], expected[keep], atol=1e-12, rtol=0)
    assert np.isnan(scored[~keep]).all()
    assert stack.services.workers_alive("bulk") >= 1


def test_a_hanging_stream_entry_is_dead_lettered_and_the_stream_flows_on(stack: Hanging) -> None:
    store = stack.store
    wait_until(lambda: store.redis.xlen(store.output) >= 39 and store.redis.xlen(store.dead) >= 1, 120,
               "the stream's outputs and its dead letter")
    [(_, dead)] = store.redis.xrange(store.dead, "-", "+")
    letter = {k.decode(): v.decode() for k, v in dead.items()}
    assert letter["in_id"] == stack.hung_entry and letter["code"] == "timeout", letter
    assert "time limit of 30 s" in letter["reason"]
    scored = {fields[b"in_id"].decode() for _, fields in store.redis.xrange(store.output, "-", "+")}
    assert scored == set(stack.stream_ids) - {stack.hung_entry}
    later = store.append([orjson.dumps({**RECORD, "age": 33.0})], stack.services.settings.stream_max_backlog)
    wait_until(lambda: store.redis.xlen(store.output) >= 40, 30, "an entry sent afterwards to be scored")
    assert later[0] in {fields[b"in_id"].decode() for _, fields in store.redis.xrange(store.output, "-", "+")}


def test_timeouts_are_counted_per_model_and_queue(stack: Hanging) -> None:
    def counted() -> dict[Any, float] | None:
        page = samples(stack.client.get("/metrics").get_data(as_text=True))
        records = value(page, "batcomputer_timeouts_total", model="hangs", queue="records") or 0
        bulk = value(page, "batcomputer_timeouts_total", model="hangs", queue="bulk") or 0
        return page if records >= 2 and bulk == len(stack.hanging_rows) else None

    wait_until(counted, 60, "the timeouts to be counted")


def test_the_web_client_shows_a_timeout_with_its_limit(stack: Hanging, titanic_draft: Draft, browser: Any) -> None:
    services = stack.services
    # A model may set its own limit in its spec: this one allows 3 s.
    quick = dataclasses.replace(titanic_draft, spec={**titanic_draft.spec, "timeouts": {"records": 3}})
    publish(services, quick, "hangs-quick", hanging(titanic_draft.pipeline, "age", HANG_AGE,
                                                     services.settings.redis_url or "", stack.flag))
    session = Session(browser, services.gateway(free_port()), "desktop")
    try:
        page = session.open("#/predict")
        page.select_option("#predict-model", "hangs-quick")
        page.wait_for_selector("#field-age")
        page.fill("#field-age", str(HANG_AGE))
        page.click("#predict-submit")
        # the record waits its turn behind the module's other hanging work (each stopped at its own limit) first
        page.wait_for_selector("#predict-result .error", timeout=180_000)
        shown = page.inner_text("#predict-result .error")
        assert "failed" in shown and "timeout" in shown and "time limit of 3 s" in shown, shown
        session.shoot("predict-timeout")
        assert session.external() == []
    finally:
        session.context.close()
    out = run_cli(settings_env(services.settings), "jobs", "dead")
    assert stack.hung_job in out.stdout and "time limit" in out.stdout
    shown_cli = run_cli(settings_env(services.settings), "jobs", "get", stack.hung_job).stdout
    assert "failed" in shown_cli and "timeout: " in shown_cli and "jobs replay" in shown_cli, shown_cli


def test_a_stopped_job_is_listed_with_the_dead_and_replayed_once_the_cause_is_gone(stack: Hanging) -> None:
    dead = stack.client.get("/api/dead").get_json()["jobs"]
    assert stack.hung_job in [j["id"] for j in dead]
    redis.Redis.from_url(stack.services.settings.redis_url or "").delete(stack.flag)  # the fix
    replayed = stack.client.post(f"/api/jobs/{stack.hung_job}/replay", json={})
    assert replayed.status_code == 202, replayed.get_json()
    [job] = wait_final(stack.client, [stack.hung_job], 30)
    assert job["state"] == "succeeded" and job["replays"] == 1
    assert job["results"][0]["survived_proba"] == score(stack.plain, [{**RECORD, "age": HANG_AGE}])[0]["survived_proba"]


def test_the_settings_fixture_is_the_shipped_one(stack: Hanging) -> None:
    shipped = Settings()
    for name in ("timeout_records_seconds", "timeout_chunk_seconds", "timeout_stream_seconds", "timeout_floor_seconds",
                 "timeout_row_ms", "timeout_grace_seconds", "max_attempts", "lease_seconds"):
        assert getattr(stack.services.settings, name) == getattr(shipped, name), name
    assert dataclasses.fields(shipped)  # (the module's settings differ only in where they keep things)
    assert Path(stack.services.settings.registry).exists()
