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
from batcomputer.settings import Settings
from worker.tasks import register_tasks

log = logging.getLogger("batcomputer.worker")
HEARTBEAT_SECONDS = 5.0


def heartbeat_key(prefix: str, queue: str) -> str:
    return f"{prefix}workers:{queue}"


class Heartbeat:
    """Tells the gateway's /readyz which workers consume which queue (a sorted set of name -> last beat)."""

    def __init__(self, settings: Settings, queues: list[str], name: str) -> None:
        self.settings, self.queues, self.name = settings, queues, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, **_: Any) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = redis_client(self.settings)
        while not self._stop.is_set():
            try:
                with client.pipeline() as pipe:
                    for queue in self.queues:
                        pipe.zadd(heartbeat_key(self.settings.key_prefix, queue), {self.name: time.time()})
                    pipe.execute()
            except Exception as exc:  # Redis away: keep trying
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(HEARTBEAT_SECONDS)

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
    register_tasks(app, settings)
    beat = Heartbeat(settings, queues, f"{'+'.join(queues)}@{socket.gethostname()}:{os.getpid()}")
    signals.worker_ready.connect(beat.start, weak=False)
    signals.worker_shutdown.connect(beat.stop, weak=False)
    return app
