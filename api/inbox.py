"""Per-process result inbox: workers push the ids of finished jobs here; waiting requests are woken in-process."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis

log = logging.getLogger("batcomputer.inbox")


class Inbox:
    """One Redis list per gateway process, read by one thread, instead of one blocking BLPOP per waiting
    request: a request registers its job before the job exists, then waits on an in-process event."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._waiting: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None
        self.key = ""

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # after gunicorn forks: a key and a thread of this process's own
            self._pid = os.getpid()
            self.key = f"{self.prefix}inbox:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            threading.Thread(target=self._run, name="inbox", daemon=True).start()

    def expect(self, job_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._ensure_thread()
            self._waiting[job_id] = event
        return event

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._waiting.pop(job_id, None)

    def _run(self) -> None:
        client: redis.Redis = self.redis
        while True:
            try:
                first = client.blpop([self.key], timeout=5)
                if not first:
                    continue
                more = client.lpop(self.key, 512) or []
                for raw in [first[1], *more]:
                    with self._lock:
                        event = self._waiting.get(raw.decode())
                    if event is not None:
                        event.set()
            except Exception as exc:  # Redis away: waiters fall back on their timeout
                log.warning("inbox: %s", exc)
                time.sleep(1)
