"""Group commit of queue messages: jobs submitted by concurrent requests leave in one message per queue."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from celery import Celery

from batcomputer.keyspace import TASK_SCORE

Item = tuple[str, Future[None]]
log = logging.getLogger("batcomputer.publisher")


class Publisher:
    """One thread per gateway process sends the messages. While it sends one, new jobs gather; the next
    message carries all of them. A lone request is sent at once; under load, messages carry many jobs,
    which spares the broker and the workers their per-message cost."""

    def __init__(self, celery: Celery, on_sent: Callable[[list[str]], None], max_jobs: int = 256,
                 timeout: float = 10.0, linger_seconds: float = 0.005) -> None:
        self.celery = celery
        self.on_sent = on_sent
        self.linger = linger_seconds
        self.max_jobs = max_jobs
        self.timeout = timeout
        self._pending: dict[str, list[Item]] = {}
        self._ready = threading.Condition()
        self._pid: int | None = None
        self.sizes: dict[int, int] = {}

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # started lazily, after gunicorn forked this process
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="publisher", daemon=True).start()

    def publish(self, job_id: str, queue: str) -> None:
        """Return once the message carrying ``job_id`` is with the broker; raise if it could not be sent."""
        future: Future[None] = Future()
        with self._ready:
            self._ensure_thread()
            self._pending.setdefault(queue, []).append((job_id, future))
            self._ready.notify()
        future.result(timeout=self.timeout)

    def _mark_sent(self, job_ids: list[str]) -> None:
        try:
            self.on_sent(job_ids)
        except Exception as exc:  # the sweeper will send these jobs once more: a duplicate, recognised
            log.warning("could not mark %d sent job(s): %s", len(job_ids), exc)

    def _run(self) -> None:
        last_log = time.monotonic()
        busy = False
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                if busy:  # under load (the last message carried several jobs): let a few more join
                    deadline = time.monotonic() + self.linger
                    while (remaining := deadline - time.monotonic()) > 0 and \
                            sum(map(len, self._pending.values())) < self.max_jobs:
                        self._ready.wait(remaining)
                taken, self._pending = self._pending, {}
            busy = sum(map(len, taken.values())) > 1
            for queue, items in taken.items():
                for start in range(0, len(items), self.max_jobs):
                    chunk = items[start:start + self.max_jobs]
                    self.sizes[len(chunk)] = self.sizes.get(len(chunk), 0) + 1
                    try:
                        self.celery.send_task(TASK_SCORE, args=[[job_id for job_id, _ in chunk]], queue=queue)
                    except BaseException as exc:  # every waiting request must hear of it; the thread goes on
                        for _, future in chunk:
                            future.set_exception(exc)
                    else:
                        for _, future in chunk:
                            future.set_result(None)
                        self._mark_sent([job_id for job_id, _ in chunk])
            if time.monotonic() - last_log >= 10 and self.sizes:
                messages = sum(self.sizes.values())
                jobs = sum(size * count for size, count in self.sizes.items())
                log.info("published %d messages carrying %d jobs (mean %.1f, largest %d)", messages, jobs,
                         jobs / messages, max(self.sizes))
                last_log = time.monotonic()
