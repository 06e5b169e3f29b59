"""The sweeper: sends again every job a lost worker or a lost message left behind, and tidies the indexes.

``sweep.lua`` looks at jobs whose check time passed. A running job whose holder is gone goes back to ``queued``
and is sent again; a queued job whose message never reached the broker is sent; a queued job whose message was
sent is sent again when its queue has no backlog (the message sits with a dead worker until the broker's
visibility timeout, or was lost); behind a backlog its next check is postponed, further each time, and after
``SENT_PATIENCE`` postponements it is sent anyway (seven requeue periods in all, 3.5 minutes by default), so
even a message lost while its queue never empties comes back. After a Redis restart every queued job is sent
again at once. One sweeper runs at a time across all workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from batcomputer.jobqueue.keyspace import QUEUE_RECORDS, QUEUES

if TYPE_CHECKING:
    from batcomputer.jobqueue.jobs import JobStore


class Sweeper:
    """Sweeps and tidies one job store."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def sweep(self, resend: Callable[[dict[str, list[str]]], None], limit: int = 1000) -> int:
        """Send again every job that needs it: a running job whose holder's lease ran out, a queued job whose
        queue has no backlog left. ``resend({queue: [job ids]})`` publishes the messages. One sweeper at a
        time across all workers; returns how many jobs were sent."""
        if not self.jobs.redis.set(self.jobs.keys.sweeper, "1", nx=True, ex=60):
            return 0
        try:
            now, keys = self.jobs.clock(), self.jobs.keys
            flat = self.jobs.scripts.call("sweep", [keys.pending, keys.holders, keys.stats, keys.progress],
                                          [now, self.jobs.lease, self.jobs.requeue, keys.job_prefix, keys.queue(""),
                                           limit, "1" if self.restarted() else "0"])
            by_queue: dict[str, list[str]] = {}
            for index in range(0, len(flat), 2):
                by_queue.setdefault(flat[index + 1].decode() or QUEUE_RECORDS, []).append(flat[index].decode())
            if by_queue:
                resend(by_queue)
            return sum(map(len, by_queue.values()))
        finally:
            self.jobs.redis.delete(self.jobs.keys.sweeper)

    def restarted(self) -> bool:
        """Whether Redis restarted since the last sweep (its run id changed; the last one seen is kept in
        Redis, so any sweeper notices, once)."""
        try:
            run_id = str(self.jobs.redis.info("server").get("run_id", ""))
        except redis.RedisError:  # INFO not allowed here: rely on the ordinary checks
            return False
        previous = self.jobs.redis.getset(self.jobs.keys.redis_run, run_id)
        return previous is not None and previous.decode() != run_id

    def tidy(self, forget_after: float = 3_600) -> None:
        """Drop expired jobs from the listing index, and workers gone longer than ``forget_after`` seconds."""
        now, keys, ttl = self.jobs.clock(), self.jobs.keys, self.jobs.ttl
        with self.jobs.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(keys.jobs, "-inf", now - ttl)
            pipe.zremrangebyscore(keys.dead, "-inf", now - ttl)
            for queue in QUEUES:  # a job whose record expired before it ended leaves the depth count too
                pipe.zremrangebyscore(keys.backlog(queue), "-inf", now - ttl)  # (a key's share: in create.lua)
            pipe.zremrangebyscore(keys.holders, "-inf", now - forget_after)
            for queue in QUEUES:
                pipe.zremrangebyscore(keys.workers(queue), "-inf", now - forget_after)
            pipe.execute()
