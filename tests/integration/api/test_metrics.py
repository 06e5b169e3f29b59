"""Prometheus metrics: after real jobs through the gateway and a real worker, the gateway's /metrics shows
the cluster's series (jobs by state and model, latency histograms, micro-batch sizes, queue depths, stream
lag, versions in use, requests) and the worker's own /metrics shows its series; both parse as Prometheus text."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from batcomputer.models.bundle import Draft
from tests.conftest import Services, free_port, wait_until
from tests.pipelines import publish

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict[Any, float], name: str, **labels: str) -> float | None:
    return page.get((name, tuple(sorted(labels.items()))))


def test_metrics_after_jobs_on_the_gateway_and_the_worker(services: Services, titanic_draft: Draft) -> None:
    publish(services, titanic_draft, "metered", titanic_draft.pipeline)
    port = free_port()
    services.start("worker-metrics", "worker", "--queues", "records", "--metrics-port", str(port))
    services.wait_for_workers("records", 1)
    client = create_app(services.settings).test_client()
    for age in (20.0, 30.0, 40.0):
        done = client.post("/api/models/metered/jobs?wait=20", json={**RECORD, "age": age})
        assert done.status_code == 200 and done.get_json()["state"] == "succeeded"
    listed = client.post("/api/models/metered/jobs?wait=20", json={"records": [RECORD] * 5})
    assert listed.get_json()["state"] == "succeeded"
    assert client.post("/api/models/metered/jobs", json={**RECORD, "sex": "x"}).status_code == 422
    assert client.post("/api/models/metered/stream", json={"records": [RECORD] * 3}).status_code == 202  # no consumer

    def scraped() -> dict[Any, float] | None:
        response = client.get("/metrics")
        assert response.status_code == 200 and response.content_type.startswith("text/plain")
        page = samples(response.get_data(as_text=True))
        flushed = value(page, "batcomputer_jobs_scored_total", model="metered", state="succeeded", version="1")
        requests = value(page, "batcomputer_http_requests_total", method="POST", route="/api/models/<model>/jobs",
                         status="422")
        return page if flushed == 4 and requests == 1 else None

    page = wait_until(scraped, 30, "the worker's and the gateway's metrics to be flushed")
    assert value(page, "batcomputer_jobs_submitted_total", model="metered", queue="records") == 4
    assert value(page, "batcomputer_jobs_ended_total", model="metered", state="succeeded") == 4
    assert value(page, "batcomputer_queue_depth", queue="records") == 0
    assert value(page, "batcomputer_workers", queue="records") == 1
    assert value(page, "batcomputer_model_version", model="metered", alias="production") == 1
    assert value(page, "batcomputer_stream_backlog", model="metered") == 3
    assert value(page, "batcomputer_dead_jobs") == 0
    assert (value(page, "batcomputer_queue_drain_per_second", queue="records") or 0) > 0
    for histogram, labels in (("batcomputer_queue_wait_seconds", {"queue": "records"}),
                              ("batcomputer_end_to_end_seconds", {"queue": "records"})):
        assert value(page, f"{histogram}_count", **labels) == 4
        assert value(page, f"{histogram}_bucket", **labels, le="+Inf") == 4
        assert 0 < (value(page, f"{histogram}_sum", **labels) or 0) < 4 * 20
    assert value(page, "batcomputer_scoring_seconds_count", model="metered") == 4  # three micro-batches, one list
    assert value(page, "batcomputer_micro_batch_records_sum", model="metered") == 8
    assert value(page, "batcomputer_micro_batch_records_bucket", model="metered", le="4.0") == 3  # the 1-record calls
    # The worker's own endpoint: its series alone.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        own = samples(response.read().decode())
    assert value(own, "batcomputer_jobs_scored_total", model="metered", state="succeeded", version="1") == 4
    assert value(own, "batcomputer_model_version_scored", model="metered") == 1
    assert value(own, "batcomputer_http_requests_total", method="POST", route="/api/models/<model>/jobs",
                 status="422") is None
