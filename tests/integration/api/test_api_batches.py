"""Parquet batches through the live stack: upload or URIs, output equal to in-process scoring, bad rows and
bad files, storage confinement, media types, the output download, cancel, the CLI."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import Services, run_cli, settings_env, wait_until

Stack = tuple[str, Settings, Services]
PARQUET = "application/vnd.apache.parquet"
FINAL = ("succeeded", "failed", "dead", "cancelled")


def crime_table(registry: Registry, rows: int, seed: int = 7, bad: bool = True) -> pa.Table:
    """Realistic crime rows (every category, months, districts missing at times), an id column passed
    through, and, with ``bad``, a few rows the model must refuse."""
    schema = registry.schema("crime")
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {"crime_id": pa.array([f"c{i:07d}" for i in range(rows)])}
    for field in schema.fields:
        if field.categories:
            values = np.array(field.categories, dtype=object)[rng.integers(0, len(field.categories), rows)]
            if field.nullable:
                values[rng.random(rows) < 0.2] = None
            columns[field.name] = pa.array(values, type=pa.string())
        else:
            columns[field.name] = pa.array(rng.integers(int(field.minimum), int(field.maximum) + 1, rows))
    table = pa.table(columns)
    if bad and rows >= 10:
        crime = table.column("crime").to_pylist()
        month = table.column("month").to_pylist()
        force = table.column("force").to_pylist()
        crime[3], month[5], force[8] = "Jaywalking", 13, None
        table = table.set_column(table.schema.get_field_index("crime"), "crime", pa.array(crime))
        table = table.set_column(table.schema.get_field_index("month"), "month", pa.array(month))
        table = table.set_column(table.schema.get_field_index("force"), "force", pa.array(force))
    return table


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    return buffer.getvalue()


def wait_job(base: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = requests.get(f"{base}/api/jobs/{job_id}?wait=1", timeout=10).json()
        return job if job["state"] in FINAL else None

    return wait_until(final, timeout, f"batch {job_id} to finish", interval=0.05)  # type: ignore[no-any-return]


def expected_probabilities(registry: Registry, table: pa.Table) -> np.ndarray:
    """What the model gives in-process for these rows (the pipeline's own predict_proba on a DataFrame)."""
    bundle = registry.bundle("crime", None, pipeline=True)
    frame = table.select(bundle.schema.field_names).to_pandas()
    return np.asarray(bundle.pipeline.predict_proba(frame))


def test_an_uploaded_file_is_scored_in_chunks_equal_to_in_process_scoring(stack: Stack) -> None:
    base, settings, _ = stack
    registry = Registry.from_settings(settings)
    table = crime_table(registry, 45_000)
    response = requests.post(f"{base}/api/models/crime/batches", data=parquet_bytes(table, row_group_size=10_000),
                             headers={"Content-Type": PARQUET}, timeout=30)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["kind"] == "batch" and accepted["state"] == "queued"
    assert response.headers["Location"] == f"/api/jobs/{accepted['id']}"
    job = wait_job(base, accepted["id"])
    assert job["state"] == "succeeded", job
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (45_000, 45_000, 3)
    assert (job["chunks_total"], job["chunks_done"]) == (5, 5)
    assert job["rows_per_second"] > 0 and job["eta_seconds"] == 0

    download = requests.get(f"{base}/api/jobs/{job['id']}/output", timeout=30)
    assert download.status_code == 200 and download.headers["Content-Type"] == PARQUET
    output = pq.read_table(io.BytesIO(download.content))
    assert output.column("crime_id").to_pylist() == table.column("crime_id").to_pylist()  # every row, in order
    codes = output.column("error_code").to_pylist()
    assert {i: codes[i] for i in (3, 5, 8)} == {3: "category", 5: "range", 8: "null"}
    assert "Jaywalking" in output.column("error")[3].as_py()
    good = [i for i in range(table.num_rows) if i not in (3, 5, 8)]
    expected = expected_probabilities(registry, table.take(good))
    bundle = registry.bundle("crime")
    order = [bundle.schema.labels.index(label) for label in ("notCaught", "caught")]
    got = np.column_stack([np.asarray(output.column(name).take(good)) for name in ("notCaughtProb", "caughtProb")])
    np.testing.assert_allclose(got, expected[:, order], rtol=0, atol=1e-9)
    labels = output.column("label").take(good).to_pylist()
    assert labels == [bundle.schema.labels[int(i)] for i in expected.argmax(axis=1)]
    assert output.column("caughtProb")[3].as_py() is None and output.column("label")[3].as_py() is None
    about = output.schema.metadata[b"batcomputer"]
    assert b'"model":"crime"' in about and bundle.sha256.encode() in about and job["id"].encode() in about


def test_uris_in_the_storage_roots_are_read_and_written_and_others_refused(stack: Stack, tmp_path: Path) -> None:
    base, settings, _ = stack
    root = Path(settings.storage_roots)
    registry = Registry.from_settings(settings)
    (root / "in").mkdir(exist_ok=True)
    pq.write_table(crime_table(registry, 2_000, bad=False), root / "in" / "crimes.parquet")
    body = {"input_uri": str(root / "in" / "crimes.parquet"), "output_uri": str(root / "out" / "scored.parquet")}
    response = requests.post(f"{base}/api/models/crime/batches?columns=crime_id", json=body, timeout=10)
    assert response.status_code == 202, response.text
    assert wait_job(base, response.json()["id"])["state"] == "succeeded"
    written = pq.read_table(root / "out" / "scored.parquet")
    assert written.column_names == ["crime_id", "notCaughtProb", "caughtProb", "label", "error_code", "error"]
    assert written.num_rows == 2_000

    outside = tmp_path / "outside.parquet"
    pq.write_table(crime_table(registry, 10, bad=False), outside)
    (root / "link").symlink_to(tmp_path)
    for field, uri in (("input_uri", str(outside)), ("input_uri", f"{root}/in/../../outside.parquet"),
                       ("input_uri", f"{root}/link/outside.parquet"), ("input_uri", "s3://bucket/crimes.parquet"),
                       ("output_uri", "/etc/scored.parquet"), ("input_uri", f"{root}/in/missing.parquet")):
        refused = requests.post(f"{base}/api/models/crime/batches",
                                json={**body, field: uri}, timeout=10)
        assert refused.status_code == 422, (uri, refused.text)
        problem = refused.json()
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert problem["code"] == "storage_refused" and problem["field"] == field, problem


def test_a_body_of_another_media_type_is_a_415_naming_the_accepted_ones(stack: Stack) -> None:
    base, _, _ = stack
    for path, content_type in (("/api/models/crime/batches", "text/csv"), ("/api/models/crime/jobs", "text/plain"),
                               ("/api/predict", "application/x-www-form-urlencoded")):
        response = requests.post(f"{base}{path}", data=b'{"force": "x"}', headers={"Content-Type": content_type},
                                 timeout=10)
        assert response.status_code == 415, (path, response.text)
        problem = response.json()
        assert problem["code"] == "unsupported_media_type" and "application/json" in problem["accepted"]
    batch = requests.post(f"{base}/api/models/crime/batches", data=b"a,b", headers={"Content-Type": "text/csv"},
                          timeout=10).json()
    assert PARQUET in batch["accepted"] and "multipart/form-data" in batch["accepted"]


def test_a_multipart_upload_works_like_a_body(stack: Stack) -> None:
    base, settings, _ = stack
    table = crime_table(Registry.from_settings(settings), 500, bad=False)
    response = requests.post(f"{base}/api/models/crime/batches",
                             files={"file": ("crimes.parquet", parquet_bytes(table), PARQUET)},
                             data={"columns": "crime_id,force"}, timeout=10)
    assert response.status_code == 202, response.text
    job = wait_job(base, response.json()["id"])
    assert job["state"] == "succeeded" and job["rows_total"] == 500
    output = pq.read_table(io.BytesIO(requests.get(f"{base}/api/jobs/{job['id']}/output", timeout=10).content))
    assert output.column_names[:2] == ["crime_id", "force"] and output.num_rows == 500


@pytest.mark.parametrize("case", ["missing column", "mistyped column", "nested column", "not parquet", "truncated",
                                  "unknown columns= name"])
def test_a_file_that_cannot_be_scored_fails_its_job_clearly_and_the_worker_lives(stack: Stack, case: str) -> None:
    base, settings, _ = stack
    table = crime_table(Registry.from_settings(settings), 100, bad=False)
    query = ""
    if case == "missing column":
        data, field, words = parquet_bytes(table.drop_columns(["crime"])), "crime", "no column 'crime'"
    elif case == "mistyped column":
        month = table.schema.get_field_index("month")
        data = parquet_bytes(table.set_column(month, "month", pa.array(["ten"] * 100)))
        field, words = "month", "not numbers"
    elif case == "nested column":
        crime = table.schema.get_field_index("crime")
        data = parquet_bytes(table.set_column(crime, "crime", pa.array([{"name": "Burglary"}] * 100)))
        field, words = "crime", "struct"
    elif case == "not parquet":
        data, field, words = b"force,crime,month\nWest Yorkshire Police,Burglary,10\n", "input_uri", "not a readable"
    elif case == "truncated":
        data, field, words = parquet_bytes(table)[:-300], "input_uri", "not a readable"
    else:
        data, field, words, query = parquet_bytes(table), "columns", "no column(s) 'nope'", "?columns=crime_id,nope"
    response = requests.post(f"{base}/api/models/crime/batches{query}", data=data,
                             headers={"Content-Type": PARQUET}, timeout=10)
    assert response.status_code == 202, response.text
    job = wait_job(base, response.json()["id"])
    assert job["state"] == "failed"
    assert job["error"]["code"] == "bad_input" and job["error"]["field"] == field, job["error"]
    assert words in job["error"]["detail"]
    assert "Traceback" not in job["error"]["detail"]
    again = requests.post(f"{base}/api/models/crime/batches", data=parquet_bytes(table),
                          headers={"Content-Type": PARQUET}, timeout=10)
    assert wait_job(base, again.json()["id"])["state"] == "succeeded"  # the worker lives and goes on


def test_the_output_of_an_unfinished_or_other_job_is_refused(stack: Stack) -> None:
    base, _, _ = stack
    record = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
    job = requests.post(f"{base}/api/models/crime/jobs?wait=10", json=record, timeout=15).json()
    response = requests.get(f"{base}/api/jobs/{job['id']}/output", timeout=10)
    assert response.status_code == 404 and "not a batch" in response.json()["detail"]


def test_the_cli_scores_a_file_through_the_gateway_and_in_process(stack: Stack, tmp_path: Path) -> None:
    base, settings, _ = stack
    registry = Registry.from_settings(settings)
    table = crime_table(registry, 3_000)
    source = tmp_path / "crimes.parquet"
    pq.write_table(table, source)
    env = {**settings_env(settings), "BATCOMPUTER_API_URL": base}
    remote = run_cli(env, "score", "crime", str(source), str(tmp_path / "remote.parquet"))
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "3,000 rows" in remote.stdout and "3 failed" in remote.stdout
    local = run_cli(env, "score", "crime", str(source), str(tmp_path / "local.parquet"), "--local")
    assert local.returncode == 0, local.stdout + local.stderr
    through_api, in_process = pq.read_table(tmp_path / "remote.parquet"), pq.read_table(tmp_path / "local.parquet")
    assert through_api.drop_columns([]).equals(in_process)
    missing = run_cli(env, "score", "crime", str(tmp_path / "nothing.parquet"), str(tmp_path / "x.parquet"))
    assert missing.returncode != 0 and "nothing.parquet" in missing.stderr
    assert not os.path.exists(tmp_path / "x.parquet")


def test_a_million_row_file_through_the_api_equals_in_process_scoring(stack: Stack) -> None:
    base, settings, _ = stack
    registry = Registry.from_settings(settings)
    table = crime_table(registry, 1_000_000, seed=11)
    response = requests.post(f"{base}/api/models/crime/batches", data=parquet_bytes(table),
                             headers={"Content-Type": PARQUET}, timeout=60)
    assert response.status_code == 202, response.text
    job = wait_job(base, response.json()["id"], timeout=600)
    assert job["state"] == "succeeded", job
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (1_000_000, 1_000_000, 3)
    output = pq.read_table(io.BytesIO(requests.get(f"{base}/api/jobs/{job['id']}/output", timeout=60).content))
    assert output.num_rows == 1_000_000
    assert output.column("crime_id").equals(table.column("crime_id"))
    good = np.ones(table.num_rows, dtype=bool)
    good[[3, 5, 8]] = False
    expected = expected_probabilities(registry, table.filter(pa.array(good)))
    labels = registry.schema("crime").labels
    for name, label in (("notCaughtProb", "notCaught"), ("caughtProb", "caught")):
        got = np.asarray(output.column(name).filter(pa.array(good)))
        np.testing.assert_allclose(got, expected[:, labels.index(label)], rtol=0, atol=1e-9)


def test_a_failed_merge_leaves_no_parts_and_a_folder_is_no_output(stack: Stack) -> None:
    base, settings, _ = stack
    root = Path(settings.storage_roots)
    registry = Registry.from_settings(settings)
    pq.write_table(crime_table(registry, 30_000, bad=False), root / "merge-input.parquet")
    folder = requests.post(f"{base}/api/models/crime/batches", timeout=10,
                           json={"input_uri": str(root / "merge-input.parquet"), "output_uri": str(root)})
    assert folder.status_code == 422 and "is a folder" in folder.json()["detail"]
    (root / "not-a-folder").write_bytes(b"a file where the output's folder should be")
    body = {"input_uri": str(root / "merge-input.parquet"),
            "output_uri": str(root / "not-a-folder" / "scored.parquet")}  # only the merge can find out
    response = requests.post(f"{base}/api/models/crime/batches", json=body, timeout=10)
    assert response.status_code == 202, response.text
    job = wait_job(base, response.json()["id"])
    assert job["state"] == "failed" and job["chunks_done"] == job["chunks_total"] > 0
    parts = root / "parts" / job["id"]
    wait_until(lambda: not parts.exists(), 60, "the failed batch's parts to be deleted")
