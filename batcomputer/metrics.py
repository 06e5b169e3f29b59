"""Metric names and their Redis home: every process counts in memory, flushes to Redis, any /metrics renders.

Scoring happens in many processes (Celery's prefork children, gunicorn's workers, stream consumers), so no
process can answer for the others. Each counts and observes in memory (about a microsecond, under a lock),
and every few seconds adds what it saw to two Redis hashes: the cluster's (``Keys.metrics("")``, rendered by
the gateway's ``/metrics`` with live gauges: queue depths, drain rates, workers, dead jobs, stream lag, the
version each alias points to) and its own worker's (``Keys.metrics(node)``, rendered by that worker's
``/metrics``). A hash field is ``<metric>|<label>=<value>,...|<part>``: ``value`` for a counter or gauge,
``sum``, ``count`` and ``le=<bound>`` (the count of observations in that bucket alone) for a histogram.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("batcomputer.metrics")

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

# Counted by the processes that do the work (help text, buckets for histograms).
JOBS_SCORED = "batcomputer_jobs_scored"              # counter {model, version, state}: outcomes workers wrote
RECORDS_SCORED = "batcomputer_records_scored"        # counter {model, version, label}: records of succeeded jobs
RECORD_WARNINGS = "batcomputer_record_warnings"      # counter {model, version}: those of them with warnings
QUEUE_WAIT = "batcomputer_queue_wait_seconds"        # histogram {queue}: created -> a worker started it
SCORING = "batcomputer_scoring_seconds"              # histogram {model}: one call of the model (a micro-batch)
END_TO_END = "batcomputer_end_to_end_seconds"        # histogram {queue}: created -> its outcome written
MICRO_BATCH = "batcomputer_micro_batch_records"      # histogram {model}: records per call of the model
STREAM_RECORDS = "batcomputer_stream_records"        # counter {model, outcome}: scored or dead-lettered
STREAM_BATCH = "batcomputer_stream_batch_records"    # histogram {model}: entries per micro-batch read
MODEL_VERSION_SCORED = "batcomputer_model_version_scored"  # gauge {model}: the version a worker last scored
CAPTURED = "batcomputer_captured_records"            # counter {outcome}: captured records written or dropped
HTTP_REQUESTS = "batcomputer_http_requests"          # counter {route, method, status}: the gateway's answers
HTTP_SECONDS = "batcomputer_http_request_seconds"    # histogram {route}: the gateway's time per request
TIMEOUTS = "batcomputer_timeouts"                    # counter {model, queue}: records or rows stopped by a time limit

HELP = {
    JOBS_SCORED: ("counter", "Job outcomes written by workers", None),
    RECORDS_SCORED: ("counter", "Records of succeeded jobs, by the label they got", None),
    RECORD_WARNINGS: ("counter", "Records of succeeded jobs that got warnings (values the training data never saw)",
                      None),
    QUEUE_WAIT: ("histogram", "Seconds from a job's creation until a worker started it", SECONDS),
    SCORING: ("histogram", "Seconds per call of a model (one micro-batch or one list of records)", SECONDS),
    END_TO_END: ("histogram", "Seconds from a job's creation until its outcome was written", SECONDS),
    MICRO_BATCH: ("histogram", "Records scored per call of a model", SIZES),
    STREAM_RECORDS: ("counter", "Stream entries a consumer scored or dead-lettered", None),
    STREAM_BATCH: ("histogram", "Stream entries per micro-batch a consumer read", SIZES),
    MODEL_VERSION_SCORED: ("gauge", "The model version this worker scored last", None),
    CAPTURED: ("counter", "Captured records written to the capture root, or dropped (it could not be written)",
               None),
    HTTP_REQUESTS: ("counter", "Requests the gateway answered, by route and status", None),
    HTTP_SECONDS: ("histogram", "Seconds the gateway took per request", SECONDS),
    TIMEOUTS: ("counter", "Records, rows or stream entries left out because scoring them ran past its time limit",
               None),
}

# Rendered live from Redis and the registry by the gateway (cluster-wide gauges and the jobs' counters).
JOBS_SUBMITTED = "batcomputer_jobs_submitted"        # counter {model, queue}: jobs accepted
JOBS_ENDED = "batcomputer_jobs_ended"                # counter {model, state}: jobs that reached a final state
QUEUE_DEPTH = "batcomputer_queue_depth"              # gauge {queue}: unfinished jobs (admission control's measure)
QUEUE_DRAIN = "batcomputer_queue_drain_per_second"   # gauge {queue}: jobs ended per second lately
WORKERS = "batcomputer_workers"                      # gauge {queue}: scoring processes with a fresh heartbeat
DEAD_JOBS = "batcomputer_dead_jobs"                  # gauge: dead jobs awaiting a replay
STREAM_BACKLOG = "batcomputer_stream_backlog"        # gauge {model}: stream entries not yet scored (lag + pending)
STREAM_PENDING = "batcomputer_stream_pending"        # gauge {model}: entries read but not yet acknowledged
DRIFT_PSI = "batcomputer_drift_psi"                  # gauge {model, version, field, window}: PSI of captured traffic
DRIFT_STATE = "batcomputer_drift_state"              # gauge {model}: 0 ok, 1 warn, 2 alert (the monitor's last look)
LIVE_QUALITY = "batcomputer_live_quality"            # gauge {model, version, window, metric}: live quality (outcomes)
HOLDOUT_QUALITY = "batcomputer_holdout_quality"      # gauge {model, version, metric}: the same on the version's holdout
MODEL_VERSION = "batcomputer_model_version"          # gauge {model, alias}: the version an alias points to

Labels = tuple[tuple[str, str], ...]


def series(name: str, labels: Labels, part: str) -> str:
    return f"{name}|{','.join(f'{k}={v}' for k, v in labels)}|{part}"


class Recorder:
    """What one process counted since its last flush; ``flush`` adds it to Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self._failing = False

    def count(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        key = series(name, labels, "value")
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + amount

    def set(self, name: str, labels: Labels, value: float) -> None:
        with self._lock:
            self._gauges[series(name, labels, "value")] = value

    def observe(self, name: str, labels: Labels, values: Iterable[float]) -> None:
        """Observations of one histogram series (several at once: one lock, one label string)."""
        bounds: tuple[float, ...] = HELP[name][2] or ()
        prefix = f"{name}|{','.join(f'{k}={v}' for k, v in labels)}|"
        with self._lock:
            counts = self._counts
            total = seen = 0.0
            for value in values:
                index = bisect.bisect_left(bounds, value)
                bucket = prefix + (f"le={bounds[index]}" if index < len(bounds) else "le=+Inf")
                counts[bucket] = counts.get(bucket, 0.0) + 1
                total += value
                seen += 1
            if seen:
                counts[prefix + "sum"] = counts.get(prefix + "sum", 0.0) + total
                counts[prefix + "count"] = counts.get(prefix + "count", 0.0) + seen

    def flush(self, client: Any, hashes: list[str], node: str | None = None, node_ttl: int = 3_600) -> None:
        """Add the counts to each of ``hashes`` (and set gauges on ``node``, this worker's own hash). What
        Redis did not take is kept for the next flush."""
        with self._lock:
            counts, gauges = self._counts, self._gauges
            self._counts, self._gauges = {}, {}
        if not counts and not gauges:
            return
        try:
            with client.pipeline(transaction=False) as pipe:
                for key in hashes:
                    for field, amount in counts.items():
                        pipe.hincrbyfloat(key, field, amount)
                if node is not None:
                    if gauges:
                        pipe.hset(node, mapping=gauges)
                    pipe.expire(node, node_ttl)
                pipe.execute()
            self._failing = False
        except redis.RedisError as exc:
            if not self._failing:  # once per outage, not every flush
                log.warning("metrics not flushed yet (kept for the next flush): %s", exc)
            self._failing = True
            with self._lock:
                for field, amount in counts.items():
                    self._counts[field] = self._counts.get(field, 0.0) + amount
                for field, value in gauges.items():
                    self._gauges.setdefault(field, value)


class Flusher:
    """A thread that flushes a recorder every ``interval`` seconds (and once more when stopped)."""

    def __init__(self, recorder: Recorder, client: Any, hashes: list[str], node: str | None = None,
                 interval: float = 5.0) -> None:
        self.recorder, self.client, self.hashes, self.node, self.interval = recorder, client, hashes, node, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.recorder.flush(self.client, self.hashes, self.node)

    def stop(self) -> None:
        self._stop.set()
        self.recorder.flush(self.client, self.hashes, self.node)


def parse_labels(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",") if "=" in pair)


def families(stored: dict[bytes, bytes]) -> Iterator[Metric]:
    """Prometheus metric families of one Redis metrics hash."""
    grouped: dict[str, dict[str, dict[str, float]]] = {}
    for raw_field, raw_value in stored.items():
        try:
            name, labels, part = raw_field.decode().split("|", 2)
            value = float(raw_value)
        except ValueError:
            continue
        if name in HELP:
            grouped.setdefault(name, {}).setdefault(labels, {})[part] = value
    for name, by_labels in sorted(grouped.items()):
        kind, text, bounds = HELP[name]
        names = sorted({k for labels in by_labels for k in parse_labels(labels)})
        family: Any
        if kind == "histogram":
            family = HistogramMetricFamily(name, text, labels=names)
            for labels, parts in sorted(by_labels.items()):
                found = parse_labels(labels)
                running, buckets = 0.0, []
                for bound in [*(bounds or ()), "+Inf"]:
                    running += parts.get(f"le={bound}", 0.0)
                    buckets.append(("+Inf" if bound == "+Inf" else str(float(bound)), running))
                family.add_metric([found.get(n, "") for n in names], buckets, parts.get("sum", 0.0))
        else:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, text, labels=names)
            for labels, parts in sorted(by_labels.items()):
                found = parse_labels(labels)
                family.add_metric([found.get(n, "") for n in names], parts.get("value", 0.0))
        yield family


class HashCollector(Collector):
    """Renders one Redis metrics hash (a worker's own, or the cluster's)."""

    def __init__(self, client: Any, key: str) -> None:
        self.client, self.key = client, key

    def collect(self) -> Iterator[Metric]:
        yield from families(self.client.hgetall(self.key))


def exposition(*collectors: Collector) -> bytes:
    """The Prometheus text format of ``collectors``."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return bytes(generate_latest(registry))
