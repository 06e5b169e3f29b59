"""The scoring task: run one job's delivery, count attempts across lost workers, record the outcome."""

from __future__ import annotations

import logging
import os
import traceback

import redis
from celery import Celery

from batcomputer.broker import redis_client
from batcomputer.errors import BatcomputerError
from batcomputer.jobs import DEAD, FAILED, FINAL, TASK_SCORE, JobStore
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

    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        self.jobs = JobStore(redis_client(self.settings), self.settings.key_prefix, self.settings.job_ttl_seconds,
                             self.settings.visibility_timeout_seconds)
        self.bundles = BundleCache(Registry.from_settings(self.settings))
        self.batcher = Batcher(score, self.settings.batch_max_records, self.settings.batch_window_ms / 1000)
        self._pid = os.getpid()

    def run(self, job_id: str) -> str:
        """Score one delivery of a job. Redis errors propagate: the message stays unacked and comes back."""
        self._ensure()
        start = self.jobs.start(job_id)
        if start.state is None:
            log.warning("job %s expired before it ran; dropping it", job_id)
            return "expired"
        if start.state in FINAL or start.state == "busy":
            return start.state  # a duplicate delivery: finished, or another delivery holds the lease
        if start.attempts > self.settings.max_attempts:
            reason = (f"delivered {start.attempts - 1} times and the worker was lost each time "
                      f"(limit {self.settings.max_attempts}); the job is dead and will not be retried")
            self.jobs.fail(job_id, DEAD, {"code": "dead", "detail": reason, "attempts": start.attempts - 1})
            log.error("job %s is dead: %s", job_id, reason)
            return DEAD
        try:
            bundle = self.bundles.get(start.model, start.version)
            clean = validate_records(bundle.schema, start.records or [])
            if len(clean) == 1 and start.attempts == 1:
                results = [self.batcher.submit(bundle, clean[0]).result()]
            else:  # lists are vectorised already; a retried record is scored alone, away from other jobs
                results = score(bundle, clean)
        except redis.RedisError:
            raise
        except BatcomputerError as exc:
            self.jobs.fail(job_id, FAILED, {"code": exc.code, "detail": exc.detail, **exc.extra})
            return FAILED
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self.jobs.fail(job_id, FAILED, {"code": "scoring_error", "detail": f"{type(exc).__name__}: {exc}",
                                            "trace": traceback.format_exc(limit=3)})
            return FAILED
        self.jobs.succeed(job_id, results)
        return "succeeded"


def register_tasks(app: Celery, settings: Settings) -> Scorer:
    scorer = Scorer(settings)

    @app.task(name=TASK_SCORE, acks_late=True, reject_on_worker_lost=True, acks_on_failure_or_timeout=False,
              ignore_result=True)
    def score_job(job_id: str) -> str:
        return scorer.run(job_id)

    return scorer
