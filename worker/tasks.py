"""The scoring task: run one delivery of a message's jobs under this process's lease and record each outcome."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from celery import Celery

from batcomputer.errors import BatcomputerError, ModelError, TimedOut
from batcomputer.jobqueue.connection import redis_client
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import (
    BUSY,
    FAILED,
    FINAL,
    QUEUE_BULK,
    QUEUE_RECORDS,
    SUCCEEDED,
    TASK_SCORE,
    parent_of,
)
from batcomputer.jobqueue.records import Start
from batcomputer.metrics import (
    END_TO_END,
    JOBS_SCORED,
    MICRO_BATCH,
    MODEL_VERSION_SCORED,
    QUEUE_WAIT,
    RECORD_WARNINGS,
    RECORDS_SCORED,
    SCORING,
    TIMEOUTS,
    Recorder,
)
from batcomputer.models.bundle import Bundle
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.monitoring.capture import Capture
from batcomputer.settings import Settings
from worker.bundle_cache import BundleCache
from worker.explainer import Explainer
from worker.heartbeat import Heartbeat, holder_name
from worker.limits import Limits, Watchdog, settle, timed_out
from worker.microbatcher import Batcher
from worker.turns import Turns

log = logging.getLogger("batcomputer.worker")
BATCH_RESULT_TIMEOUT_SECONDS = 300.0  # no job waits forever on the micro-batcher
SCORING_SLOTS = 1  # scoring calls at once in a record worker process: they hold the GIL, more only contend
SLICE_RECORDS = 16  # records a list scores per turn while another key's work waits for one
SINGLES = "\0singles"  # the micro-batchers' owner in the turns: single records, whoever sent them


class Scorer:
    """Per-process state (Redis client, lease and heartbeat, bundle cache, batcher), built lazily in the
    process that scores (after the pool forks)."""

    def __init__(self, settings: Settings, queues: list[str], node: str = "") -> None:
        self.settings = settings
        self.queues = queues
        self.node = node  # the worker this process belongs to: its metrics hash
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.heartbeat: Heartbeat | None = None
        os.register_at_fork(after_in_child=self._new_lock)  # a lock held by another thread at fork time

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._build()

    def _build(self) -> None:
        self.redis = redis_client(self.settings)
        self.jobs = JobStore.from_settings(self.redis, self.settings)
        self.bundles = BundleCache(Registry.from_settings(self.settings))
        self.recorder = Recorder()
        self.turns = Turns(SCORING_SLOTS)
        self.limits = Limits.from_settings(self.settings)
        self.watchdog = Watchdog(self.limits.grace)
        self.explainer = Explainer(self.settings)

        def score_singles(bundle: Bundle, records: list[dict[str, Any]], limit: float | None) -> list[Any]:
            with self.turns.turn(SINGLES):  # single records of every key: one owner among the keys' lists
                return self.score_apart(bundle, records, self.limits.of("records", bundle, limit))

        def explain_singles(bundle: Bundle, records: list[dict[str, Any]], limit: float | None) -> list[Any]:
            # Scored like any single record, in the singles' turn; explained by the explainer, outside it.
            return self.explain_apart(bundle, records, score_singles(bundle, records, limit), limit)

        window = self.settings.batch_window_ms / 1000
        self.batcher = Batcher(score_singles, self.settings.batch_max_records, window, recorder=self.recorder)
        self.explaining = Batcher(explain_singles, self.settings.batch_max_records, window, recorder=self.recorder)
        self.holder = holder_name(self.queues)
        self.capture = Capture.from_settings(self.settings, self.recorder, self.redis)
        self.runner: Any = None
        if QUEUE_BULK in self.queues:  # files come on the bulk queue only: record workers need no pyarrow
            from batcomputer.files.storage import Storage
            from worker.parquet.runner import BatchRunner

            self.runner = BatchRunner(self.jobs, Storage.from_settings(self.settings), self.bundles, self.holder,
                                      self.settings.batch_chunk_rows, self.settings.batch_ttl_seconds, self.capture,
                                      self.limits, self.watchdog, self.recorder, self.explainer)
        self.orphans: set[str] = set()
        self.next_expiry = 0.0
        self.heartbeat = Heartbeat(self.jobs, self.queues, self.holder, on_beat=self.on_beat).start()
        self._pid = os.getpid()

    def stop(self) -> None:
        if self.heartbeat is not None and self._pid == os.getpid():
            self.heartbeat.stop()
            self.explainer.close()
            if self.capture is not None:
                self.capture.flush(force=True)  # before the metrics: what it writes or drops is counted
            self.flush_metrics()

    def on_beat(self) -> None:
        self.give_back()
        self.flush_metrics()
        if self.capture is not None:
            self.capture.flush()
            if time.monotonic() >= self.next_expiry:
                self.next_expiry = time.monotonic() + 3_600
                try:
                    self.capture.expire(self.settings.capture_retention_days)
                except Exception as exc:
                    log.warning("could not delete old capture partitions: %s", exc)

    def flush_metrics(self) -> None:
        """Add what this process counted to the cluster's metrics and its worker's."""
        keys = self.jobs.keys
        node = keys.metrics(self.node) if self.node else None
        self.recorder.flush(self.redis, [keys.metrics(), *([node] if node else [])], node)

    def warm(self) -> None:
        """Load the current version of every model before the first job asks for it (seconds, not ms)."""
        self._ensure()
        registry = self.bundles.registry
        for model in registry.models():
            try:
                self.bundles.get(model, registry.resolve(model, None, self.settings.default_alias))
            except Exception as exc:  # a model without the alias, or unreadable: jobs will say why
                log.info("not preloading %s: %s", model, exc)

    def run(self, job_ids: list[str]) -> dict[str, str]:
        """Score one delivery of a message's jobs. If it cannot record an outcome (Redis errors propagate),
        the jobs it started go back to the queue, now or, while Redis is away, from the heartbeat."""
        self._ensure()
        try:
            return self._run(job_ids)
        except BaseException:
            # Any job of the message may have been started, even when ``start`` itself failed (Redis ran the
            # script and went away before answering); giving back a job this process does not hold is a no-op.
            self.orphans.update(job_ids)
            self.give_back()
            raise

    def give_back(self) -> None:
        """Return jobs started but never finished (see ``run``) to the queue; retried on every heartbeat."""
        if not self.orphans:
            return
        taken = list(self.orphans)
        try:
            self.jobs.give_back(taken, self.holder)
        except redis.RedisError as exc:
            log.warning("could not give %d unfinished job(s) back yet: %s", len(taken), exc)
        else:
            self.orphans.difference_update(taken)
            log.warning("gave back any of %d job(s) this process had started but not finished", len(taken))

    def score_apart(self, bundle: Bundle, records: list[dict[str, Any]], limit: float) -> list[Any]:
        """Score a micro-batch of single records (of several jobs) under ``limit``: if it hangs or raises, the
        records are scored again apart, so only those that hang or raise alone fail (with their error as
        their result), never their neighbours."""
        return self.settled(bundle, len(records), limit, lambda a, b: score(bundle, records[a:b]))

    def explain_apart(self, bundle: Bundle, records: list[dict[str, Any]], results: list[Any],
                      requested: float | None) -> list[Any]:
        """``results`` (a micro-batch's, errors among them) with each scored record's explanation, computed by
        the explainer under the time limit of that many explained records, apart like ``score_apart``."""
        ok = [i for i, result in enumerate(results) if isinstance(result, dict)]
        limit = self.limits.of("records", bundle, requested, explained=len(ok))
        chosen = [records[i] for i in ok]
        explained = self.settled(bundle, len(ok), limit, lambda a, b: self.explainer.explain(bundle, chosen[a:b]))
        results = list(results)
        for i, explanation in zip(ok, explained, strict=True):
            results[i] = {**results[i], "explanation": explanation} if isinstance(explanation, dict) else explanation
        return results

    def settled(self, bundle: Bundle, count: int, limit: float, call: Any) -> list[Any]:
        """``call(start, stop)`` over ``count`` records, settled (``settle``): each record's value, or its
        piece's error."""
        pieces = settle(call, count, limit, lambda rows: min(limit, self.limits.piece(rows)), self.watchdog,
                        f"a micro-batch of {bundle.ref}", lambda exc: ModelError(**error_of("micro-batch", exc)))
        self.count_timeouts(bundle, QUEUE_RECORDS, timed_out(pieces))
        results: list[Any] = []
        for piece in pieces:
            results += piece.result if piece.result is not None else [piece.error] * (piece.stop - piece.start)
        return results

    def count_timeouts(self, bundle: Bundle, queue: str, records: int) -> None:
        if records:
            self.recorder.count(TIMEOUTS, (("model", bundle.model), ("queue", queue)), records)

    def score_list(self, start: Start, bundle: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score a job's list in turns with other keys' work: whole when nobody else waits, else in slices of
        ``SLICE_RECORDS``, so another key's job waits for a slice, not for a whole list. Each call runs under
        the job's time limit; past it the job fails with ``TimedOut``."""
        owner = start.owner
        limit = self.limits.of("records", bundle, start.timeout)
        results: list[dict[str, Any]] = []
        while len(results) < len(records):
            with self.turns.turn(owner):
                size = SLICE_RECORDS if self.turns.others_waiting(owner) else len(records) - len(results)
                first = len(results)
                what = (f"records {first:,} to {first + size - 1:,} of {len(records):,}" if size < len(records)
                        else f"{len(records):,} record(s)")
                try:
                    piece = records[first:first + size]
                    results += self.watchdog.run(lambda piece=piece: score(bundle, piece),  # type: ignore[misc]
                                                 limit, f"scoring {what} of {bundle.ref}")
                except BatcomputerError as exc:
                    if exc.code == "timeout":
                        self.count_timeouts(bundle, start.queue, 1)
                    raise
        if start.explain:  # by the explainer, outside the turns, under the limit of that many explained records
            limit = self.limits.of("records", bundle, start.timeout, explained=len(records))
            try:
                explained = self.watchdog.run(lambda: self.explainer.explain(bundle, records), limit,
                                              f"explaining {len(records):,} record(s) of {bundle.ref}")
            except BatcomputerError as exc:
                if exc.code == "timeout":
                    self.count_timeouts(bundle, start.queue, 1)
                raise
            results = [{**result, "explanation": e} for result, e in zip(results, explained, strict=True)]
        return results

    def _run(self, job_ids: list[str]) -> dict[str, str]:
        outcomes: list[tuple[str, str, dict[str, Any]]] = []
        waiting: list[tuple[str, Future[dict[str, Any]]]] = []
        summary: dict[str, str] = {}
        ended_batches: list[str] = []
        starts = self.jobs.start(job_ids, self.holder, self.settings.max_attempts)
        started = time.time()
        begun: dict[str, Start] = {}
        for job_id, start in zip(job_ids, starts, strict=True):
            summary[job_id] = start.state or "expired"
            if start.state is None or start.state in FINAL or start.state == BUSY:
                continue  # expired, final already (or dead now), or held by a live worker: a duplicate
            begun[job_id] = start
            if isinstance(start.records, dict):  # a batch file, or a chunk of one
                try:
                    outcome = self.runner.run(job_id, start)
                except Exception as exc:
                    outcome = (FAILED, {"error": error_of(job_id, exc)})
                if outcome is not None:
                    outcomes.append((job_id, *outcome))
                    if parent_of(job_id) is None:
                        ended_batches.append(job_id)
                else:
                    summary[job_id] = "planned"
                continue
            try:
                bundle = self.bundles.get(start.model, start.version)
                clean = start.records or []  # validated by the gateway against this very version
                if len(clean) == 1 and start.attempts == 1:
                    batcher = self.explaining if start.explain else self.batcher
                    waiting.append((job_id, batcher.submit(bundle, clean[0], start.timeout)))
                    continue
                # Lists are vectorised already; a redelivered record is scored alone, away from other jobs.
                began = time.perf_counter()
                results = self.score_list(start, bundle, clean)
                labels = (("model", start.model),)
                self.recorder.observe(SCORING, labels, (time.perf_counter() - began,))
                self.recorder.observe(MICRO_BATCH, labels, (len(clean),))
                outcomes.append((job_id, SUCCEEDED, {"results": results}))
            except Exception as exc:
                outcomes.append((job_id, FAILED, failure(job_id, exc)))
        for job_id, future in waiting:
            try:
                outcomes.append((job_id, SUCCEEDED, {"results": [future.result(BATCH_RESULT_TIMEOUT_SECONDS)]}))
            except FutureTimeout:
                outcomes.append((job_id, FAILED, {"error": error_of(job_id, TimeoutError(
                    f"the micro-batcher gave no result within {BATCH_RESULT_TIMEOUT_SECONDS:g} s"))}))
            except Exception as exc:
                outcomes.append((job_id, FAILED, failure(job_id, exc)))
        if outcomes:
            recorded = dict(zip([job_id for job_id, _, _ in outcomes], self.jobs.end(outcomes), strict=True))
            for batch_id in ended_batches:
                if recorded[batch_id]:
                    self.runner.ended(batch_id)
            self.record(begun, started, outcomes, recorded)
            if self.capture is not None:
                self.capture_outcomes(begun, outcomes, recorded)
        summary.update({job_id: state for job_id, state, _ in outcomes})
        return summary

    def capture_outcomes(self, begun: dict[str, Start], outcomes: list[tuple[str, str, dict[str, Any]]],
                         recorded: dict[str, bool]) -> None:
        """Capture the records of each job this delivery scored (its first outcome only), by its source."""
        assert self.capture is not None
        for job_id, state, fields in outcomes:
            start = begun.get(job_id)
            if state != SUCCEEDED or not recorded.get(job_id) or start is None or not isinstance(start.records, list):
                continue
            try:
                bundle = self.bundles.get(start.model, start.version)
                count = len(start.records)
                self.capture.add(bundle, start.source, [job_id] * count, list(range(count)), start.records,
                                 fields["results"], keys=start.keys, owner=start.owner)
            except Exception as exc:  # capture never fails a job
                log.warning("could not capture job %s: %s", job_id, exc)

    def record(self, begun: dict[str, Start], started: float, outcomes: list[tuple[str, str, dict[str, Any]]],
               recorded: dict[str, bool]) -> None:
        """Metrics of one delivery: queue waits, outcomes by model and version, end-to-end times."""
        now = time.time()
        waits: dict[str, list[float]] = {}
        totals: dict[str, list[float]] = {}
        for first in begun.values():
            if first.created is not None:
                waits.setdefault(first.queue, []).append(max(0.0, started - first.created))
        for job_id, state, fields in outcomes:
            if job_id not in begun or not recorded.get(job_id):
                continue
            start = begun[job_id]
            self.recorder.count(JOBS_SCORED, (("model", start.model), ("state", state),
                                              ("version", str(start.version))))
            if state == SUCCEEDED:
                count_records(self.recorder, start.model, start.version, fields.get("results"))
            self.recorder.set(MODEL_VERSION_SCORED, (("model", start.model),), start.version)
            level = logging.DEBUG if state == SUCCEEDED else logging.WARNING
            if log.isEnabledFor(level):
                log.log(level, "job %s %s (%s version %d, attempt %d)", job_id, state, start.model, start.version,
                        start.attempts, extra={"job_id": job_id, "model": start.model, "version": start.version,
                                               "state": state, "attempts": start.attempts, "queue": start.queue})
            if start.created is not None:
                totals.setdefault(start.queue, []).append(max(0.0, now - start.created))
        for queue, values in waits.items():
            self.recorder.observe(QUEUE_WAIT, (("queue", queue),), values)
        for queue, values in totals.items():
            self.recorder.observe(END_TO_END, (("queue", queue),), values)


def count_records(recorder: Recorder, model: str, version: int, results: Any) -> None:
    """Records by label and those with warnings, per version: what guarded promotion compares
    (``batcomputer.models.guard``)."""
    if not isinstance(results, list):
        return
    labels: dict[str, int] = {}
    warned = 0
    for result in results:
        label = str(result.get("label"))
        labels[label] = labels.get(label, 0) + 1
        warned += bool(result.get("warnings"))
    for label, count in labels.items():
        recorder.count(RECORDS_SCORED, (("label", label), ("model", model), ("version", str(version))), count)
    if warned:
        recorder.count(RECORD_WARNINGS, (("model", model), ("version", str(version))), warned)


def failure(job_id: str, exc: BaseException) -> dict[str, Any]:
    """The fields of a job that failed: its error; a job stopped by its time limit also keeps its records
    and joins the dead jobs, to be replayed once the model is fixed."""
    error = error_of(job_id, exc)
    return {"error": error, **({"replayable": "1"} if error["code"] == TimedOut.code else {})}


def error_of(job_id: str, exc: BaseException) -> dict[str, Any]:
    """What a client sees of a failure: a stable code and a message. The traceback goes to the log only."""
    if isinstance(exc, redis.RedisError):
        raise exc
    if isinstance(exc, BatcomputerError):
        return {"code": exc.code, "detail": exc.detail, **exc.extra}
    log.error("job %s failed", job_id, exc_info=exc)
    code = "scoring_timeout" if isinstance(exc, TimeoutError) else "scoring_error"
    message = str(exc).splitlines()[0][:300] if str(exc) else ""
    return {"code": code, "detail": f"the model could not score the records ({type(exc).__name__}"
                                    f"{': ' + message if message else ''}); the worker log has the details"}


def register_tasks(app: Celery, settings: Settings, queues: list[str], node: str = "") -> Scorer:
    scorer = Scorer(settings, queues, node)

    @app.task(name=TASK_SCORE, acks_late=True, reject_on_worker_lost=True, acks_on_failure_or_timeout=False,
              ignore_result=True)
    def score_jobs(job_ids: list[str]) -> dict[str, str]:
        return scorer.run(job_ids)

    return scorer
