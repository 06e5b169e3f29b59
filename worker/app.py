"""The worker's Celery app: the shared configuration, the scoring task, the heartbeat and the sweeper."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, signals

from batcomputer.files.storage import Storage
from batcomputer.jobqueue.broker import make_celery
from batcomputer.jobqueue.connection import redis_client
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import QUEUE_RECORDS
from batcomputer.logs import configure_logging
from batcomputer.models.guard import Guard, Limits
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from worker.housekeeping import Housekeeper
from worker.tasks import register_tasks
from worker.transport import TRANSPORT


def make_worker_app(settings: Settings, queues: list[str], node: str = "") -> Celery:
    """The app for one worker. Each scoring process (the worker itself for the record pool of threads, each
    child for the bulk pool of processes) starts its own heartbeat when it first builds its state, and flushes
    its metrics into the cluster's and ``node``'s (this worker's) hashes; the main process runs a sweeper."""
    app = make_celery(settings)
    app.conf.broker_transport = TRANSPORT  # kombu's Redis transport, repaired for closing after an outage
    scorer = register_tasks(app, settings, queues, node)
    sweeper: list[Housekeeper] = []

    def warm(**_: Any) -> None:
        threading.Thread(target=scorer.warm, name="warm", daemon=True).start()

    def start_sweeper(**_: Any) -> None:
        jobs = JobStore.from_settings(redis_client(settings), settings)
        guard = Guard(jobs.redis, settings.key_prefix, Registry.from_settings(settings), settings.default_alias,
                      Limits(jobs=settings.guard_jobs, minutes=settings.guard_minutes))
        sweeper.append(Housekeeper(jobs, Storage.from_settings(settings), settings.webhook_secret,
                                   settings.webhook_hosts, guard).start())

    def stop(**_: Any) -> None:
        for running in sweeper:
            running.stop()
        scorer.stop()

    def setup_logging(loglevel: int | str | None = None, **_: Any) -> None:  # instead of Celery's own
        configure_logging(settings, loglevel or "INFO")

    signals.setup_logging.connect(setup_logging, weak=False)
    if QUEUE_RECORDS in queues:
        signals.worker_ready.connect(warm, weak=False)  # the record pool is threads: it scores in this process
    else:
        signals.worker_process_init.connect(warm, weak=False)  # prefork children score
        signals.worker_process_shutdown.connect(lambda **_: scorer.stop(), weak=False)
    signals.worker_ready.connect(start_sweeper, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)
    return app
