"""The heartbeat of a scoring process: renews its lease on the jobs it holds and tells /readyz it is alive."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

from batcomputer.jobqueue.jobs import JobStore

log = logging.getLogger("batcomputer.worker")


def holder_name(queues: list[str]) -> str:
    """A name no other process ever had: queues, host, pid and a random part (pids are reused)."""
    return f"{'+'.join(queues)}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Heartbeat:
    """A thread that renews this process's lease every third of the lease, and its presence per queue.
    While the process lives, every job it holds stays its own however long it runs; once it dies, its lease
    runs out within ``lease_seconds`` and the sweeper sends its jobs again."""

    def __init__(self, jobs: JobStore, queues: list[str], name: str,
                 on_beat: Callable[[], None] | None = None) -> None:
        self.jobs, self.queues, self.name = jobs, queues, name
        self.on_beat = on_beat
        self.interval = max(0.2, jobs.lease / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.beat()  # the lease exists before the first job is taken
        self._thread.start()
        return self

    def beat(self) -> None:
        try:
            self.jobs.leases.renew(self.name, self.queues)
        except redis.RedisError as exc:  # Redis away: the lease may lapse; the jobs' finish-once rules hold
            log.warning("heartbeat failed: %s", exc)
            return
        if self.on_beat is not None:
            self.on_beat()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            started = time.monotonic()
            self.beat()
            if time.monotonic() - started > self.interval:
                log.warning("heartbeat took %.1f s", time.monotonic() - started)

    def stop(self) -> None:
        """A clean stop: leave the worker sets (jobs still held go back to the sweeper's care)."""
        self._stop.set()
        try:
            self.jobs.leases.leave(self.name, self.queues)
        except redis.RedisError as exc:
            log.warning("could not remove heartbeat: %s", exc)
