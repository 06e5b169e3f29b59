"""Per-process result inbox: workers push the ids of finished jobs here; waiting requests are woken in-process."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis

from batcomputer.jobqueue.keyspace import Keys

log = logging.getLogger("batcomputer.inbox")


class Waiter:
    """One waiting request: woken with the final job, as the finish script wrote it to the inbox."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.entry: str | None = None

    def wait(self, timeout: float) -> str | None:
        """The inbox entry of the final job, or None if it did not end within ``timeout`` seconds."""
        self.event.wait(timeout)
        return self.entry


class Inbox:
    """One Redis list per gateway process, read by one thread, instead of one blocking BLPOP per waiting
    request: a request registers its job before the job exists, then waits in-process. Each entry carries
    the final job, so the woken request answers without reading it again. The reader runs while requests
    wait and stops when none do."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._waiting: dict[str, Waiter] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._reading = False
        self.key = ""

    def expect(self, job_id: str) -> Waiter:
        waiter = Waiter()
        with self._lock:
            if self._pid != os.getpid():  # after gunicorn forks: a key of this process's own
                self._pid, self._reading = os.getpid(), False
                self.key = Keys(self.prefix).inbox(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
            self._waiting[job_id] = waiter
            if not self._reading:
                self._reading = True
                threading.Thread(target=self._run, name="inbox", daemon=True).start()
        return waiter

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._waiting.pop(job_id, None)

    def _run(self) -> None:
        failing = False
        while True:
            with self._lock:
                if not self._waiting:
                    self._reading = False
                    return
            try:
                first = self.redis.blpop([self.key], timeout=1)
                if first:
                    self._deliver(first[1])  # its request answers while the rest are read
                    for raw in self.redis.lpop(self.key, 512) or []:
                        self._deliver(raw)
                failing = False
            except redis.RedisError as exc:  # Redis away: waiters fall back on their own timeout
                if not failing:
                    log.warning("inbox: %s", exc)
                failing = True
                time.sleep(0.5)

    def _deliver(self, raw: Any) -> None:
        entry = raw.decode()  # bytes (the client does not decode replies)
        with self._lock:
            waiter = self._waiting.get(entry.split(" ", 1)[0])
        if waiter is not None:
            waiter.entry = entry
            waiter.event.set()
