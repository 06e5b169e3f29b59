"""Leases of worker processes: each renews its own from a heartbeat thread and announces the queues it serves;
a job held by a process whose lease ran out is the sweeper's to send again."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batcomputer.jobqueue.jobs import JobStore


class Leases:
    """Worker processes' leases (``holders``) and their presence per queue (``workers``)."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def renew(self, holder: str, queues: tuple[str, ...] | list[str] = ()) -> None:
        """Extend ``holder``'s lease (every job it holds stays its own) and mark it alive on ``queues``: one
        round trip."""
        now, keys = self.jobs.clock(), self.jobs.keys
        with self.jobs.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.holders, {holder: now + self.jobs.lease})
            for queue in queues:
                pipe.zadd(keys.workers(queue), {holder: now})
            pipe.execute()

    def leave(self, holder: str, queues: tuple[str, ...] | list[str]) -> None:
        """A clean stop: ``holder`` leaves the queues' worker sets (jobs it still holds go to the sweeper)."""
        with self.jobs.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrem(self.jobs.keys.workers(queue), holder)
            pipe.execute()

    def live(self, queue: str, fresh_seconds: float | None = None) -> int:
        """Worker processes on ``queue`` whose heartbeat is at most ``fresh_seconds`` old (default: a lease)."""
        since = self.jobs.clock() - (self.jobs.lease if fresh_seconds is None else fresh_seconds)
        return int(self.jobs.redis.zcount(self.jobs.keys.workers(queue), since, "+inf"))
