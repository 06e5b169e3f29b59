"""Admission control: how many unfinished jobs each queue holds, how fast it drains, and the 429 a full queue
answers with a Retry-After from that rate (the limit itself is checked atomically by ``create.lua``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from batcomputer.errors import TooManyRequests
from batcomputer.jobqueue.keyspace import DRAIN_BUCKET_SECONDS

if TYPE_CHECKING:
    from batcomputer.jobqueue.jobs import JobStore


class Admission:
    """Depth and drain rate per queue, read from the job store's Redis."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def depth(self, queue: str) -> int:
        """Jobs of ``queue`` not yet final (queued or running)."""
        return int(self.jobs.redis.zcard(self.jobs.keys.backlog(queue)))

    def drain_rate(self, queue: str, windows: int = 3) -> float:
        """Jobs of ``queue`` ended per second, measured over the last ``windows`` complete drain windows and
        the current one."""
        now = self.jobs.clock()
        current = int(now // DRAIN_BUCKET_SECONDS)
        counts = self.jobs.redis.mget([self.jobs.keys.drained(queue, b) for b in range(current - windows, current + 1)])
        elapsed = windows * DRAIN_BUCKET_SECONDS + (now - current * DRAIN_BUCKET_SECONDS)
        return sum(int(c) for c in counts if c) / elapsed

    def refusal(self, queue: str, depth: int, limit: int) -> TooManyRequests:
        """The 429 for a full queue: Retry-After is how long the measured drain rate takes to make room (at
        least a second, at most ten minutes; a minute when nothing has drained lately)."""
        rate = self.drain_rate(queue)
        if rate > 0:
            wait = min(600, max(1, math.ceil((depth - limit + 1) / rate)))
            why = f"it drains {rate:.1f} jobs/s"
        else:
            wait = 60
            why = "no job on it ended in the last 30 s (are its workers running?)"
        return TooManyRequests(f"the {queue} queue holds {depth} unfinished jobs, its limit is {limit}; {why}: "
                               f"retry in {wait} s", retry_after=wait, field="queue", queue=queue, depth=depth,
                               limit=limit, drain_per_second=round(rate, 2))

