"""The gateway's Prometheus endpoint: cluster-wide series from Redis and the registry, and its own requests.

``GET /metrics`` renders, from any gateway process: what every worker, consumer and gateway process flushed
into the cluster's metrics hash (scoring, queue waits, end-to-end times, micro-batch sizes, HTTP requests),
the job counters the job scripts keep (submitted by model and queue, ended by model and state), and live
gauges (queue depths and drain rates, live workers, dead jobs, stream backlogs, the version each alias
points to). Public like /healthz: it holds counts, never records; keep it inside the cluster's network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.context import gateway
from api.gateway import Gateway
from batcomputer.jobqueue.keyspace import QUEUES
from batcomputer.jobqueue.streams import StreamStore
from batcomputer.metrics import (
    DEAD_JOBS,
    DRIFT_PSI,
    DRIFT_STATE,
    HOLDOUT_QUALITY,
    HTTP_REQUESTS,
    HTTP_SECONDS,
    JOBS_ENDED,
    JOBS_SUBMITTED,
    LIVE_QUALITY,
    MODEL_VERSION,
    QUEUE_DEPTH,
    QUEUE_DRAIN,
    STREAM_BACKLOG,
    STREAM_PENDING,
    WORKERS,
    Flusher,
    HashCollector,
    Recorder,
    exposition,
)
from batcomputer.monitoring.store import STATES, MonitorStore

metrics = Blueprint("metrics", __name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER_FRESH_SECONDS = 20


class ClusterCollector(Collector):
    """Job counters and live gauges, read when scraped."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        gw, _keys = self.gw, self.gw.jobs.keys
        submitted = CounterMetricFamily(JOBS_SUBMITTED, "Jobs accepted", labels=["model", "queue"])
        ended = CounterMetricFamily(JOBS_ENDED, "Jobs that reached a final state", labels=["model", "state"])
        for (kind, model, other), count in sorted(gw.jobs.counters().items()):
            (submitted if kind == "submitted" else ended).add_metric([model, other], float(count))
        yield submitted
        yield ended
        depth = GaugeMetricFamily(QUEUE_DEPTH, "Unfinished jobs per queue (admission control's measure)",
                                  labels=["queue"])
        drain = GaugeMetricFamily(QUEUE_DRAIN, "Jobs ended per second lately, per queue", labels=["queue"])
        workers = GaugeMetricFamily(WORKERS, "Scoring processes with a fresh heartbeat, per queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], gw.jobs.admission.depth(queue))
            drain.add_metric([queue], gw.jobs.admission.drain_rate(queue))
            workers.add_metric([queue], gw.jobs.leases.live(queue, WORKER_FRESH_SECONDS))
        yield from (depth, drain, workers)
        yield GaugeMetricFamily(DEAD_JOBS, "Dead jobs awaiting a replay", value=gw.jobs.dead.count())
        versions = GaugeMetricFamily(MODEL_VERSION, "The version each alias points to", labels=["model", "alias"])
        backlog = GaugeMetricFamily(STREAM_BACKLOG, "Stream entries not yet scored", labels=["model"])
        pending = GaugeMetricFamily(STREAM_PENDING, "Stream entries read but not acknowledged", labels=["model"])
        for model in gw.registry.models():
            for alias, version in sorted(gw.registry.aliases(model).items()):
                versions.add_metric([model, alias], version)
            store = StreamStore(gw.redis, gw.settings.key_prefix, model)
            if store.exists():
                backlog.add_metric([model], store.backlog())
                pending.add_metric([model], store.pending())
        yield from (versions, backlog, pending)
        psi = GaugeMetricFamily(DRIFT_PSI, "Population stability index of each field of captured traffic against "
                                "the version's training profile", labels=["model", "version", "field", "window"])
        state = GaugeMetricFamily(DRIFT_STATE, "The monitor's last look: 0 ok, 1 warn, 2 alert", labels=["model"])
        live = GaugeMetricFamily(LIVE_QUALITY, "Quality of each version over captured records whose outcome came back "
                                 "(log_loss, accuracy, roc_auc, brier, calibration_error)",
                                 labels=["model", "version", "window", "metric"])
        holdout = GaugeMetricFamily(HOLDOUT_QUALITY, "The same figures on the holdout each version was promoted on",
                                    labels=["model", "version", "metric"])
        monitors = MonitorStore(gw.redis, gw.settings.key_prefix)
        for model in monitors.models():
            found = monitors.load(model)
            if not found:
                continue
            state.add_metric([model], float(STATES.index(found.get("state", "ok"))) if found.get("state") in STATES
                             else 0.0)
            for window, versions in found.get("windows", {}).items():
                for version, seen in versions.items():
                    for drift in seen.get("fields", []):
                        if drift.get("psi") is not None:
                            psi.add_metric([model, str(version), drift["field"], window], float(drift["psi"]))
                    quality = seen.get("quality") or {}
                    if quality.get("records"):
                        figures = {**{k: quality.get(k) for k in QUALITY_FIGURES},
                                   "calibration_error": (quality.get("calibration") or {}).get("error")}
                        for name, value in figures.items():
                            if value is not None:
                                live.add_metric([model, str(version), window, name], float(value))
                    if window == "hour":
                        for name, value in (quality.get("holdout") or {}).items():
                            if value is not None:
                                holdout.add_metric([model, str(version), name], float(value))
        yield from (psi, state, live, holdout)


QUALITY_FIGURES = ("log_loss", "accuracy", "roc_auc", "brier")  # a monitor result's live quality, as gauges


@metrics.get("/metrics")
def show_metrics() -> Response:
    gw = gateway()
    body = exposition(HashCollector(gw.redis, gw.jobs.keys.metrics()), ClusterCollector(gw))
    return Response(body, content_type=CONTENT_TYPE)


def install(app: Flask, gw: Gateway) -> None:
    """Count every request by route, method and status, and time it; a thread per gateway process flushes."""
    recorder = Recorder()
    flushing: dict[str, Any] = {}

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def count_request(response: Response) -> Response:
        if flushing.get("pid") != os.getpid():  # started lazily, after the server forked this process
            flushing["pid"] = os.getpid()
            Flusher(recorder, gw.redis, [gw.jobs.keys.metrics()]).start()
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        recorder.count(HTTP_REQUESTS, (("method", request.method), ("route", route),
                                       ("status", str(response.status_code))))
        started = g.get("started")
        if started is not None:
            recorder.observe(HTTP_SECONDS, (("route", route),), (time.perf_counter() - started,))
        return response
