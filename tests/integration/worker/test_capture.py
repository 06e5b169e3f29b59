"""Capture of what production scores, with real workers and a stream consumer: at a sample rate of 1, exactly
the records of jobs, /api/predict calls, stream entries and batch rows come out of the capture root, one row
each, with the values the clients got; a process killed mid-window leaves only readable files; an unwritable
root drops and counts while scoring goes on."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from api.app import create_app
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.monitoring.capture import Capture
from batcomputer.settings import Settings
from tests.conftest import ROOT, Services, wait_until
from tests.integration.worker.test_worker_batches import titanic_table
from tests.pipelines import publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}
README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def captured(services: Services, titanic_draft: Draft, tmp_path: Path) -> Path:
    root = tmp_path / "capture"
    services.settings = dataclasses.replace(services.settings, capture_root=str(root),
                                            capture_rates="job=1,predict=1,stream=1,batch=1")
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    return root


def table_of(root: Path) -> Any:
    return ds.dataset(str(root), format="parquet", partitioning="hive").to_table()


def test_every_scored_record_of_every_source_is_captured_once_with_what_the_client_got(
        services: Services, captured: Path) -> None:
    services.worker("records")
    services.worker("bulk")
    services.start("stream", "stream", "titanic", "--metrics-port=0")
    client = create_app(services.settings).test_client()
    jobs = [client.post("/api/models/titanic/jobs?wait=20",
                        json={"records": [{**RECORD, "age": float(a)} for a in range(1 + n % 3)]}).get_json()
            for n in range(12)]
    assert all(job["state"] == "succeeded" for job in jobs)
    predicted = [client.post("/api/predict?model=titanic", json={**RECORD, "age": float(40 + n)}) for n in range(5)]
    assert all(answer.status_code == 200 for answer in predicted)
    appended = client.post("/api/models/titanic/stream", json={"records": [{**RECORD, "age": 7.0}] * 30})
    assert appended.status_code == 202
    table = titanic_table(5_000)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=1_000)
    batch = client.post("/api/models/titanic/batches", data=buffer.getvalue(),
                        headers={"Content-Type": "application/vnd.apache.parquet"}).get_json()
    wait_until(lambda: client.get(f"/api/jobs/{batch['id']}").get_json()["state"] == "succeeded", 120, "the batch")
    out = f"{services.settings.key_prefix}stream:titanic:out"
    import redis

    wait_until(lambda: redis.Redis.from_url(services.settings.redis_url or "").xlen(out) >= 30, 60, "stream outputs")
    services.stop()  # SIGTERM: every process writes what it holds
    rows = table_of(captured)
    sources = rows.column("source").to_pylist()
    counts = {source: sources.count(source) for source in ("job", "predict", "stream", "batch")}
    assert counts == {"job": sum(1 + n % 3 for n in range(12)), "predict": len(predicted), "stream": 30,
                      "batch": 5_000}
    bundle = Registry.from_settings(services.settings).bundle("titanic", "production")
    assert set(rows.column("version").to_pylist()) == {bundle.version}
    assert set(rows.column("sha256").to_pylist()) == {bundle.sha256}
    by_key = {(r["id"], r["index"]): r for r in rows.to_pylist()}
    for job in jobs:
        for index, result in enumerate(job["results"]):
            row = by_key[(job["id"], index)]
            assert row["out_survived_proba"] == result["survived_proba"] and row["label"] == result["label"]
            assert row["in_age"] == float(index) and row["in_sex"] == "female"
    scored = [r for r in rows.to_pylist() if r["source"] == "batch"]
    assert sorted(r["index"] for r in scored) == list(range(5_000))  # every row, by its row number in the file
    ages = table.column("age").to_pylist()
    assert all(r["in_age"] == ages[r["index"]] for r in scored)


def test_a_root_that_cannot_be_written_drops_and_counts_while_scoring_goes_on_and_readyz_says_so(
        services: Services, titanic_draft: Draft, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the capture root should be")
    services.settings = dataclasses.replace(services.settings, capture_root=str(blocked / "capture"))
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    client = create_app(services.settings).test_client()
    assert client.get("/readyz").get_json()["capture"] == {"state": "ok"}
    worker = services.worker("records")
    jobs = [client.post("/api/models/titanic/jobs?wait=20", json=RECORD).get_json() for _ in range(3)]
    assert [job["state"] for job in jobs] == ["succeeded"] * 3  # scoring goes on
    services.stop_one(worker)  # SIGTERM: it writes what it holds, and cannot
    health = client.get("/readyz")
    assert health.status_code == 200 and health.get_json()["status"] == "ready"
    capture = health.get_json()["capture"]
    assert capture["state"] == "degraded" and capture["processes"] == 1 and capture["dropped"] == 3
    assert capture["reasons"] and str(tmp_path) not in health.get_data(as_text=True)  # no server path
    metrics = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'batcomputer_captured_records_total\{outcome="dropped"\} 3\.0', metrics), metrics
    blocked.unlink()  # the root can be written again: the next worker's write takes the capture off degraded
    worker = services.worker("records")
    assert client.post("/api/models/titanic/jobs?wait=20", json=RECORD).get_json()["state"] == "succeeded"
    services.stop_one(worker)
    assert table_of(blocked / "capture").num_rows == 1
    # The first worker is gone while degraded; what it dropped stays on record until it is old enough.
    assert client.get("/readyz").get_json()["capture"]["processes"] == 1


def test_the_readmes_queries_read_the_capture_tree_as_one_table(titanic_draft: Draft, tmp_path: Path) -> None:
    registry = Registry.from_settings(Settings(registry=str(tmp_path / "registry")))
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    bundle = registry.bundle("titanic", "production", pipeline=True)
    root = tmp_path / "capture"
    capture = Capture(str(root))
    for part in range(3):  # three files, as three processes (or three windows) would write them
        records = [{**RECORD, "age": float(part * 10 + i)} for i in range(4)]
        capture.add(bundle, "job", [f"j{part}"] * 4, list(range(4)), records, score(bundle, records))
        capture.flush(force=True)
    assert len(list(root.rglob("*.parquet"))) == 3
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    query = next(block for block in blocks if "CAPTURE = " in block)
    scope: dict[str, Any] = {}
    exec(query.replace('CAPTURE = "var/capture"', f"CAPTURE = {str(root)!r}"), scope)
    assert scope["frame"].shape[0] == 12 and scope["mix"].num_rows >= 1
    # DuckDB's query, as the README writes it, in the test tools' venv (DuckDB is no dependency of the project)
    sql = re.findall(r"```sql\n(.*?)```", README.read_text(), re.S)[0].replace("var/capture", str(root))
    duckdb = ROOT / ".venv-clients" / "bin" / "python"
    assert duckdb.exists(), "the test tools are missing: make test-tools"
    done = subprocess.run([str(duckdb), "-c", "import duckdb, json, sys; print(json.dumps(duckdb.sql(sys.stdin.read())"
                           ".fetchall(), default=str))"], input=sql, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert sum(row[4] for row in rows) == 12 and {row[0] for row in rows} == {"titanic"}
    expected = scope["frame"]["out_survived_proba"].mean()
    assert abs(sum(row[4] * row[5] for row in rows) / 12 - expected) < 1e-9


def test_a_worker_killed_mid_window_leaves_only_whole_files(services: Services, captured: Path) -> None:
    services.settings = dataclasses.replace(services.settings, capture_roll_mb=1)  # a file every few thousand rows
    doomed = services.worker("bulk")
    client = create_app(services.settings).test_client()
    table = titanic_table(400_000)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=50_000)
    batch = client.post("/api/models/titanic/batches", data=buffer.getvalue(),
                        headers={"Content-Type": "application/vnd.apache.parquet"}).get_json()
    wait_until(lambda: list(captured.rglob("part-*.parquet")), 120, "the first capture file")
    services.kill(doomed)  # SIGKILL: whatever it was writing stays unwritten, never half-written
    files = list(captured.rglob("*.parquet"))
    assert files and all(pq.read_table(path).num_rows > 0 for path in files if not path.name.startswith("."))
    assert table_of(captured).num_rows == sum(pq.read_metadata(path).num_rows for path in files
                                              if not path.name.startswith("."))
    services.worker("bulk")  # the batch still finishes, its chunks scored again by another worker
    wait_until(lambda: client.get(f"/api/jobs/{batch['id']}").get_json()["state"] == "succeeded", 180, "the batch")
