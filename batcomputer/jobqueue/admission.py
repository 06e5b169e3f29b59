"""Admission control: how many unfinished jobs each queue holds, how fast it drains, each key's share of it,
and the 429 a full queue (or a key at its share) answers with a Retry-After from that rate (the limits
themselves are checked atomically by ``create.lua``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from batcomputer.errors import TooManyRequests
from batcomputer.jobqueue.keyspace import DRAIN_BUCKET_SECONDS

if TYPE_CHECKING:
    from batcomputer.jobqueue.jobs import JobStore


class Share(NamedTuple):
    """What one key may hold of a queue: at most ``most`` unfinished jobs, and ``reserve`` even when the queue
    is full (so that another key's flood never shuts it out). Zero: no bound (work without a key)."""

    most: int
    reserve: int


NO_SHARE = Share(0, 0)


def share_of(limit: int, most: float, reserve: float) -> Share:
    """A key's share of a queue of depth ``limit``, from fractions of it (settings ``key_share`` and
    ``key_reserve``); at least one job each."""
    if limit <= 0:
        return NO_SHARE
    return Share(max(1, math.ceil(limit * most)), max(1, math.ceil(limit * reserve)))


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

    def refusal_of_key(self, queue: str, held: int, most: int) -> TooManyRequests:
        """The 429 for a key that holds its share of a queue: room comes as its own jobs end."""
        rate = self.drain_rate(queue)
        wait = min(600, max(1, math.ceil((held - most + 1) / rate))) if rate > 0 else 60
        return TooManyRequests(f"this key holds {held} unfinished jobs on the {queue} queue, its share is {most} "
                               f"(BATCOMPUTER_KEY_SHARE of the queue's limit): retry in {wait} s as they end",
                               retry_after=wait, field="queue", queue=queue, held=held, share=most)

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

