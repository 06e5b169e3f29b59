"""Group commit of queue messages: jobs submitted by concurrent requests leave in one message per queue."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

Item = tuple[str, Future[None]]
Send = Callable[[list[tuple[str, list[str]]]], None]
log = logging.getLogger("batcomputer.publisher")


class Publisher:
    """One thread per gateway process sends the messages. While it sends, new jobs gather; the next round
    carries all of them, one message per queue, in one round trip (``send``: ``JobStore.publish``, which
    also marks the jobs sent). A lone request is sent at once; under load, messages carry many jobs, which
    spares Redis and the workers their per-message cost."""

    def __init__(self, send: Send, max_jobs: int = 256, timeout: float = 10.0,
                 linger_seconds: float = 0.005) -> None:
        self.send = send
        self.linger = linger_seconds
        self.max_jobs = max_jobs
        self.timeout = timeout
        self._pending: dict[str, list[Item]] = {}
        self._ready = threading.Condition()
        self._pid: int | None = None
        self.sizes: dict[int, int] = {}

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # started lazily, after the server forked this process
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
            chunks = [(queue, items[start:start + self.max_jobs]) for queue, items in taken.items()
                      for start in range(0, len(items), self.max_jobs)]
            try:
                self.send([(queue, [job_id for job_id, _ in chunk]) for queue, chunk in chunks])
            except BaseException as exc:  # every waiting request must hear of it; the thread goes on
                for _, chunk in chunks:
                    for _, future in chunk:
                        future.set_exception(exc)
            else:
                for _, chunk in chunks:
                    self.sizes[len(chunk)] = self.sizes.get(len(chunk), 0) + 1
                    for _, future in chunk:
                        future.set_result(None)
            if time.monotonic() - last_log >= 10 and self.sizes:
                messages = sum(self.sizes.values())
                jobs = sum(size * count for size, count in self.sizes.items())
                log.info("published %d messages carrying %d jobs (mean %.1f, largest %d)", messages, jobs,
                         jobs / messages, max(self.sizes))
                last_log = time.monotonic()
