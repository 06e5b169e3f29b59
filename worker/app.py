"""The worker's Celery app: the shared configuration, the scoring task, and a heartbeat per queue."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery, signals

from batcomputer.broker import make_celery, redis_client
from batcomputer.jobs import QUEUE_RECORDS, TASK_SCORE, JobStore
from batcomputer.settings import Settings
from worker.tasks import register_tasks

log = logging.getLogger("batcomputer.worker")
HEARTBEAT_SECONDS = 5.0


def heartbeat_key(prefix: str, queue: str) -> str:
    return f"{prefix}workers:{queue}"


class Heartbeat:
    """Tells /readyz which workers consume which queue, and re-delivers jobs whose lease ran out."""

    def __init__(self, settings: Settings, queues: list[str], name: str, app: Celery) -> None:
        self.settings, self.queues, self.name, self.app = settings, queues, name, app
        self.interval = min(HEARTBEAT_SECONDS, max(0.5, settings.visibility_timeout_seconds / 3))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, **_: Any) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _resend(self, job_id: str, queue: str) -> None:
        log.warning("job %s was not finished within its lease; delivering it again on %s", job_id, queue)
        self.app.send_task(TASK_SCORE, args=[[job_id]], queue=queue)

    def _run(self) -> None:
        client = redis_client(self.settings)
        jobs = JobStore(client, self.settings.key_prefix, self.settings.job_ttl_seconds,
                        self.settings.visibility_timeout_seconds)
        while not self._stop.is_set():
            try:
                with client.pipeline() as pipe:
                    for queue in self.queues:
                        pipe.zadd(heartbeat_key(self.settings.key_prefix, queue), {self.name: time.time()})
                    pipe.execute()
                jobs.sweep(self._resend)
            except Exception as exc:  # Redis away: keep trying
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.interval)

    def stop(self, **_: Any) -> None:
        self._stop.set()
        try:
            client = redis_client(self.settings)
            for queue in self.queues:
                client.zrem(heartbeat_key(self.settings.key_prefix, queue), self.name)
        except Exception as exc:
            log.warning("could not remove heartbeat: %s", exc)


def make_worker_app(settings: Settings, queues: list[str]) -> Celery:
    app = make_celery(settings)
    scorer = register_tasks(app, settings)

    def warm(**_: Any) -> None:
        threading.Thread(target=scorer.warm, name="warm", daemon=True).start()

    if QUEUE_RECORDS in queues:
        signals.worker_ready.connect(warm, weak=False)  # the record pool is threads: it scores in this process
    else:
        signals.worker_process_init.connect(warm, weak=False)  # prefork children score
    beat = Heartbeat(settings, queues, f"{'+'.join(queues)}@{socket.gethostname()}:{os.getpid()}", app)
    signals.worker_ready.connect(beat.start, weak=False)
    signals.worker_shutdown.connect(beat.stop, weak=False)
    return app
