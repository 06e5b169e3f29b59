"""Batches under faults, with real bulk workers and the shipped timeouts: a worker SIGKILLed mid-file, a
promotion mid-file, cancel mid-file, signed webhooks (delivered, retried, forged, undeliverable), the
deletion of expired files, and hostile files (a footer that lies about its rows, text that decompresses a
thousandfold, corrupt pages, a row group far bigger than a chunk)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from flask.testing import FlaskClient

from batcomputer.files.storage import Storage
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from tests.conftest import Services, free_port, wait_until
from tests.integration.worker.test_worker_recovery import _other_pipeline, client_for
from tests.parquet_footer import claim_rows
from tests.pipelines import Gated, publish
from worker.housekeeping import Housekeeper
from worker.webhooks import WebhookSender

PARQUET = "application/vnd.apache.parquet"


def titanic_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table({"passenger": pa.array([f"p{i:06d}" for i in range(rows)]),
                     "pclass": pa.array(rng.integers(1, 4, rows)),
                     "sex": pa.array(np.array(["male", "female"], dtype=object)[rng.integers(0, 2, rows)]),
                     "age": pa.array(rng.uniform(1, 80, rows).round(1)),
                     "sibsp": pa.array(rng.integers(0, 4, rows)), "parch": pa.array(rng.integers(0, 3, rows))})


def upload(client: FlaskClient, model: str, table: pa.Table, row_group_size: int, query: str = "") -> dict[str, Any]:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    response = client.post(f"/api/models/{model}/batches{query}", data=buffer.getvalue(),
                           headers={"Content-Type": PARQUET})
    assert response.status_code == 202, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def final(client: FlaskClient, job_id: str, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job = client.get(f"/api/jobs/{job_id}").get_json()
        return job if job["state"] in ("succeeded", "failed", "dead", "cancelled") else None

    return wait_until(ended, timeout, f"batch {job_id} to end", interval=0.2)  # type: ignore[no-any-return]


def output_of(client: FlaskClient, job_id: str) -> pa.Table:
    response = client.get(f"/api/jobs/{job_id}/output")
    assert response.status_code == 200, response.get_json()
    return pq.read_table(io.BytesIO(response.data))


@pytest.fixture
def gated(services: Services, titanic_draft: Draft) -> tuple[str, redis.Redis]:
    gate = f"{services.settings.key_prefix}gate"
    publish(services, titanic_draft, "gated", Gated(titanic_draft.pipeline, services.settings.redis_url or "", gate))
    return gate, redis.Redis.from_url(services.settings.redis_url or "")


def test_a_bulk_worker_killed_mid_file_loses_no_row_and_duplicates_none(
        services: Services, titanic_draft: Draft, gated: tuple[str, redis.Redis]) -> None:
    gate, gauge = gated
    client = client_for(services)
    doomed = services.worker("bulk")
    table = titanic_table(4_000)
    job = upload(client, "gated", table, row_group_size=500)  # eight chunks
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 1, 60, "a chunk to reach the model")
    services.kill(doomed)  # SIGKILL, mid-chunk: no warm shutdown, no acknowledgement
    services.worker("bulk")
    gauge.rpush(gate, *["open"] * 20)
    done = final(client, job["id"], timeout=180)
    assert done["state"] == "succeeded", done
    assert (done["rows_total"], done["rows_done"], done["chunks_done"]) == (4_000, 4_000, 8)
    output = output_of(client, job["id"])
    assert output.num_rows == 4_000
    assert output.column("passenger").to_pylist() == table.column("passenger").to_pylist()  # once each, in order
    bundle = Registry.from_settings(services.settings).bundle("gated", None, pipeline=True)
    expected = bundle.pipeline.inner.predict_proba(table.select(bundle.schema.field_names).to_pandas())
    np.testing.assert_allclose(np.asarray(output.column(bundle.schema.outputs[1])), expected[:, 1], atol=1e-9, rtol=0)


def test_every_chunk_uses_the_version_pinned_at_submission(services: Services, titanic_draft: Draft,
                                                           gated: tuple[str, redis.Redis], data_dir: Path) -> None:
    gate, gauge = gated
    client = client_for(services)
    services.worker("bulk")
    table = titanic_table(3_000)
    job = upload(client, "gated", table, row_group_size=1_000)
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 1, 60, "the first chunk to reach the model")
    second = publish(services, titanic_draft, "gated", _other_pipeline(data_dir), tag=2)  # production moves
    gauge.rpush(gate, *["open"] * 10)
    done = final(client, job["id"], timeout=60)
    assert (done["state"], done["version"]) == ("succeeded", 1) and second == 2
    output = output_of(client, job["id"])
    about = json.loads(output.schema.metadata[b"batcomputer"])
    registry = Registry.from_settings(services.settings)
    assert (about["version"], about["bundle_sha256"]) == (1, registry.bundle("gated", 1).sha256)
    expected = titanic_draft.pipeline.predict_proba(table.select(registry.schema("gated").field_names).to_pandas())
    np.testing.assert_allclose(np.asarray(output.column(registry.schema("gated").outputs[1])), expected[:, 1],
                               atol=1e-9, rtol=0)


def test_cancel_mid_file_stops_its_chunks_and_removes_the_partial_output(
        services: Services, gated: tuple[str, redis.Redis]) -> None:
    gate, gauge = gated
    client = client_for(services)
    services.worker("bulk")
    job = upload(client, "gated", titanic_table(4_000), row_group_size=500)
    wait_until(lambda: gauge.llen(f"{gate}:waiting") >= 1, 60, "a chunk to reach the model")
    cancelled = client.delete(f"/api/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    gauge.rpush(gate, *["open"] * 20)  # the chunks being scored finish, find the batch cancelled, and go
    parts = Path(services.settings.storage_roots) / "parts" / job["id"]
    output = Path(services.settings.storage_roots) / "outputs" / f"{job['id']}.parquet"
    chunks = [f"{job['id']}.{index}" for index in range(8)]

    def settled() -> bool:
        states = [client.get(f"/api/jobs/{chunk}").get_json()["state"] for chunk in chunks]
        return all(state == "cancelled" for state in states) and not parts.exists()

    wait_until(settled, 30, "the chunks to stop and the parts to be deleted")
    assert not output.exists()
    assert client.get(f"/api/jobs/{job['id']}").get_json()["state"] == "cancelled"
    again = client.delete(f"/api/jobs/{job['id']}")
    assert again.status_code == 409 and again.get_json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{job['id']}/output").status_code == 409
    assert client.delete(f"/api/jobs/{chunks[0]}").status_code == 409  # a chunk alone cannot be cancelled


class Receiver:
    """A local webhook endpoint: answers the statuses it is given in turn, and keeps what it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver([500])  # the first delivery fails: the second is the retry
    yield found
    found.close()


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The README's verification, as a receiver would write it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def test_a_finished_batch_calls_back_signed_and_retries_a_failed_delivery(
        services: Services, titanic_draft: Draft, receiver: Receiver) -> None:
    import dataclasses

    services.settings = dataclasses.replace(services.settings, webhook_hosts=f"127.0.0.1:{receiver.port}",
                                            webhook_secret="correct horse battery staple")
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    client = client_for(services)
    services.worker("bulk")
    url = f"http://127.0.0.1:{receiver.port}/hooks/batches"
    refused = client.post("/api/models/titanic/batches?callback_url=http://elsewhere.example/x",
                          data=b"PAR1", headers={"Content-Type": PARQUET})
    assert refused.status_code == 422 and refused.get_json()["field"] == "callback_url"
    job = upload(client, "titanic", titanic_table(1_000), row_group_size=1_000, query=f"?callback_url={url}")
    wait_until(lambda: len(receiver.received) >= 2, 60, "the delivery and its retry")
    headers, body = receiver.received[-1]
    summary = json.loads(body)
    assert (summary["id"], summary["state"], summary["rows_total"]) == (job["id"], "succeeded", 1_000)
    assert headers["batcomputer-delivery"] == f"{job['id']}/2"
    assert verify("correct horse battery staple", headers["batcomputer-signature"], body)
    assert not verify("correct horse battery staple", headers["batcomputer-signature"],
                      body.replace(b'"succeeded"', b'"failed"'))  # a forged body fails the check
    assert not verify("another secret", headers["batcomputer-signature"], body)
    done = wait_until(lambda: (j := client.get(f"/api/jobs/{job['id']}").get_json())["webhook"]["state"] ==
                      "delivered" and j, 30, "the delivery to be recorded")
    assert done["webhook"]["attempts"] == 2


def test_a_webhook_no_one_answers_is_recorded_undeliverable_after_its_retries(services: Services) -> None:
    now = [1_000_000.0]
    jobs = JobStore.from_settings(redis.Redis.from_url(services.settings.redis_url or ""), services.settings,
                                  clock=lambda: now[0])
    batches = BatchStore(jobs)
    port = free_port()
    jobs.create("b1", "titanic", 1, "f" * 64, [], "bulk",
                extra={"kind": "batch", "callback_url": f"http://127.0.0.1:{port}/nobody"})
    jobs.end([("b1", "succeeded", {})])
    batches.schedule_webhook("b1")
    sender = WebhookSender(batches, "secret", f"127.0.0.1:{port}", timeout=2)
    attempts = 0
    while (jobs.get("b1").get("webhook") or {}).get("state") != "undeliverable":
        assert sender.deliver_due() == 0
        attempts += 1
        assert attempts <= 6
        now[0] += 3_600  # past any backoff: the next attempt is due
    webhook = jobs.get("b1")["webhook"]
    assert webhook["attempts"] == 6 and webhook["error"].startswith("unreachable")
    assert sender.deliver_due() == 0 and batches.claim_webhooks() == []  # given up: no more attempts


def test_uploads_and_outputs_are_deleted_when_their_time_is_up(services: Services, tmp_path: Path) -> None:
    now = [1_000_000.0]
    jobs = JobStore.from_settings(redis.Redis.from_url(services.settings.redis_url or ""), services.settings,
                                  clock=lambda: now[0])
    storage = Storage.from_settings(services.settings)
    upload_file = storage.place("uploads/u.parquet")
    Path(upload_file.path).parent.mkdir(parents=True, exist_ok=True)
    Path(upload_file.path).write_bytes(b"PAR1")
    parts = storage.place("parts/b1")
    Path(parts.path).mkdir(parents=True)
    (Path(parts.path) / "000000.parquet").write_bytes(b"PAR1")
    batches = BatchStore(jobs)
    batches.expire_files([upload_file.url], services.settings.batch_ttl_seconds)
    batches.expire_files([parts.url], 0)
    sweeper = Housekeeper(jobs, storage)
    assert sweeper.delete_files() == 1
    assert not Path(parts.path).exists() and Path(upload_file.path).exists()
    now[0] += services.settings.batch_ttl_seconds - 1
    assert sweeper.delete_files() == 0 and Path(upload_file.path).exists()
    now[0] += 2
    assert sweeper.delete_files() == 1 and not Path(upload_file.path).exists()


# -- hostile files: a clearly failed job, and the same worker processes go on ------------------------------


def descendants(pid: int) -> set[int]:
    """The processes ``pid`` started, and theirs (a bulk worker's supervisor, Celery, its pool)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def parquet_of(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def send(client: FlaskClient, model: str, data: bytes) -> dict[str, Any]:
    response = client.post(f"/api/models/{model}/batches", data=data, headers={"Content-Type": PARQUET})
    assert response.status_code == 202, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def huge_text(rows: int, value_bytes: int, dictionary: bool) -> bytes:
    """Titanic rows and a column ``note`` that repeats one value of ``value_bytes`` in every row: a few
    kilobytes of file. Plain: the footer says how big it is decompressed. Dictionary-encoded: the footer says
    the value's size once (the dictionary page), and each row decodes to a copy of it."""
    value = pa.array(["x" * value_bytes])
    if dictionary:
        note: Any = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), value)
        options: dict[str, Any] = {"dictionary_pagesize_limit": 2 * value_bytes, "store_schema": False}
    else:
        note = pa.chunked_array([value] * rows)  # every row the same buffer: little memory here
        options = {"use_dictionary": False, "write_statistics": False}
    return parquet_of(titanic_table(rows).append_column("note", note), compression="zstd", **options)


def corrupt_pages(data: bytes) -> bytes:
    """``data`` with 200 bytes of its first column's pages overwritten: the footer intact, the pages not."""
    return data[:2_000] + b"\xff" * 200 + data[2_200:]


HOSTILE: dict[str, tuple[Any, list[str], bool]] = {
    # name: (the file, words its job's detail must have, refused at plan time, before any chunk job)
    "footer claims 3 billion rows, its columns 1,000 values": (
        lambda valid: claim_rows(valid, 3_000_000_000),
        ["row group 0 claims 3,000,000,000 rows", "holds 1,000 values", "metadata does not match"], True),
    "footer and columns claim 3 billion rows": (
        lambda valid: claim_rows(valid, 3_000_000_000, values_too=True),
        ["claims 3,000,000,000 rows", "more than the 1,000,000,000 a batch may hold"], True),
    "footer and columns claim 5 million rows": (
        lambda valid: claim_rows(valid, 5_000_000, values_too=True),
        ["row group 0 claims 5,000,000 rows but its data holds 1,000", "metadata does not match"], False),
    "a column that decompresses to 1.3 GiB": (
        lambda valid: huge_text(160, 8 << 20, dictionary=False),
        ["row group 0 holds 1.3 GiB once decompressed", "in 160 rows", "more than the 1.0 GiB a chunk may hold"],
        True),
    "a dictionary of one 16 MiB value in 100 rows": (
        lambda valid: huge_text(100, 16 << 20, dictionary=True),
        ["row group 0 decodes to more than a chunk may hold", "column 'note': 16.0 MiB a row",
         "limit of 1.0 GiB"], False),
    "corrupt data pages": (corrupt_pages, ["row group 0 cannot be read"], False),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_fails_its_job_clearly_and_the_same_worker_scores_the_next(
        services: Services, titanic_draft: Draft, case: str) -> None:
    make, words, at_plan = HOSTILE[case]
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    client = client_for(services)
    worker = services.worker("bulk")
    valid = parquet_of(titanic_table(1_000))
    warm = final(client, send(client, "titanic", valid)["id"], timeout=60)  # every pool process is up by now
    assert warm["state"] == "succeeded", warm
    processes = descendants(worker.pid)
    job = send(client, "titanic", make(valid))
    done = final(client, job["id"], timeout=120)
    assert done["state"] == "failed", done
    error = done["error"]
    assert (error["code"], error["field"]) == ("bad_input", "input_uri"), error
    assert all(word in error["detail"] for word in words), error["detail"]
    assert "Traceback" not in error["detail"]
    if at_plan:  # refused from the footer: not one chunk job made
        assert not done.get("chunks_total"), done
    again = final(client, send(client, "titanic", valid)["id"], timeout=60)
    assert (again["state"], again["rows_total"]) == ("succeeded", 1_000), again
    assert output_of(client, again["id"]).num_rows == 1_000
    assert worker.poll() is None and descendants(worker.pid) == processes  # no process died or was replaced


def test_one_row_group_five_times_the_chunk_size_is_scored_in_chunks_equal_to_in_process_scoring(
        services: Services, titanic_draft: Draft) -> None:
    publish(services, titanic_draft, "titanic", titanic_draft.pipeline)
    client = client_for(services)
    services.worker("bulk")
    table = titanic_table(1_000_000)
    assert services.settings.batch_chunk_rows == 200_000  # shipped: the row group is five chunks or more
    job = upload(client, "titanic", table, row_group_size=1_000_000)
    done = final(client, job["id"], timeout=240)
    assert done["state"] == "succeeded", done
    assert done["rows_total"] == done["rows_done"] == 1_000_000 and done["chunks_total"] >= 5, done
    output = output_of(client, job["id"])
    assert output.column("passenger").to_pylist() == table.column("passenger").to_pylist()  # once each, in order
    fields = Registry.from_settings(services.settings).schema("titanic")
    expected = titanic_draft.pipeline.predict_proba(table.select(fields.field_names).to_pandas())
    np.testing.assert_allclose(np.asarray(output.column(fields.outputs[1])), expected[:, 1], atol=1e-9, rtol=0)
