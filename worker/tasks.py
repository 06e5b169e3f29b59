"""The scoring task: run one job's delivery, count attempts across lost workers, record the outcome."""

from __future__ import annotations

import logging
import os
import threading
import traceback
from concurrent.futures import Future
from typing import Any

import redis
from celery import Celery

from batcomputer.broker import redis_client
from batcomputer.errors import BatcomputerError
from batcomputer.jobs import DEAD, FAILED, FINAL, SUCCEEDED, TASK_SCORE, JobStore
from batcomputer.registry import Registry
from batcomputer.schema import validate_records
from batcomputer.scoring import score
from batcomputer.settings import Settings
from worker.batcher import Batcher
from worker.models import BundleCache

log = logging.getLogger("batcomputer.worker")


class Scorer:
    """Per-process state (Redis client, bundle cache, batcher), created lazily after the pool forks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._lock = threading.Lock()
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
        self.jobs = JobStore(redis_client(self.settings), self.settings.key_prefix, self.settings.job_ttl_seconds,
                             self.settings.visibility_timeout_seconds)
        self.bundles = BundleCache(Registry.from_settings(self.settings))
        self.batcher = Batcher(score, self.settings.batch_max_records, self.settings.batch_window_ms / 1000)
        self._pid = os.getpid()

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
        """Score one delivery of a message's jobs. Redis errors propagate: the message stays unacked and
        comes back (and the sweeper re-sends its jobs)."""
        self._ensure()
        outcomes: list[tuple[str, str, dict[str, Any]]] = []
        waiting: list[tuple[str, Future[dict[str, Any]]]] = []
        summary: dict[str, str] = {}
        for job_id, start in zip(job_ids, self.jobs.start(job_ids), strict=True):
            summary[job_id] = start.state or "expired"
            if start.state is None or start.state in FINAL or start.state == "busy":
                continue  # expired, finished already, or another delivery holds the lease: a duplicate
            if start.attempts > self.settings.max_attempts:
                reason = (f"delivered {start.attempts - 1} times and the worker was lost each time "
                          f"(limit {self.settings.max_attempts}); the job is dead and will not be retried")
                log.error("job %s is dead: %s", job_id, reason)
                outcomes.append((job_id, DEAD, {"error": {"code": "dead", "detail": reason,
                                                          "attempts": start.attempts - 1}}))
                continue
            try:
                bundle = self.bundles.get(start.model, start.version)
                clean = validate_records(bundle.schema, start.records or [])
                if len(clean) == 1 and start.attempts == 1:
                    waiting.append((job_id, self.batcher.submit(bundle, clean[0])))
                    continue
                # Lists are vectorised already; a redelivered record is scored alone, away from other jobs.
                outcomes.append((job_id, SUCCEEDED, {"results": score(bundle, clean)}))
            except Exception as exc:
                outcomes.append((job_id, FAILED, {"error": error_of(job_id, exc)}))
        for job_id, future in waiting:
            try:
                outcomes.append((job_id, SUCCEEDED, {"results": [future.result()]}))
            except Exception as exc:
                outcomes.append((job_id, FAILED, {"error": error_of(job_id, exc)}))
        if outcomes:
            self.jobs.end(outcomes)
        summary.update({job_id: state for job_id, state, _ in outcomes})
        return summary


def error_of(job_id: str, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, redis.RedisError):
        raise exc
    if isinstance(exc, BatcomputerError):
        return {"code": exc.code, "detail": exc.detail, **exc.extra}
    log.error("job %s failed", job_id, exc_info=exc)
    return {"code": "scoring_error", "detail": f"{type(exc).__name__}: {exc}",
            "trace": "".join(traceback.format_exception(exc, limit=3))}


def register_tasks(app: Celery, settings: Settings) -> Scorer:
    scorer = Scorer(settings)

    @app.task(name=TASK_SCORE, acks_late=True, reject_on_worker_lost=True, acks_on_failure_or_timeout=False,
              ignore_result=True)
    def score_jobs(job_ids: list[str]) -> dict[str, str]:
        return scorer.run(job_ids)

    return scorer
