"""Dead jobs: those whose deliveries all lost their worker, and those stopped by their time limit. Listed newest
first, and replayed on request with their records and pinned version as accepted (``replay.lua``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batcomputer.errors import Conflict, NotFound
from batcomputer.jobqueue.keyspace import parent_of
from batcomputer.jobqueue.records import MAX_JOB_ID, SUMMARY_FIELDS, decode

if TYPE_CHECKING:
    from batcomputer.jobqueue.jobs import JobStore


class DeadJobs:
    """The dead-job index of a job store."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def page(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        """Dead jobs, most recent death first, as summaries (with their error); the offset of the next page."""
        ids = self.jobs.redis.zrevrange(self.jobs.keys.dead, offset, offset + limit - 1)
        with self.jobs.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.jobs.keys.job(job_id.decode()), *SUMMARY_FIELDS, "replays")
            rows = pipe.execute() if ids else []
        found = [decode({k.encode(): v for k, v in zip((*SUMMARY_FIELDS, "replays"), values, strict=True)
                         if v is not None}) for values in rows if values[0] is not None]
        return found, (offset + len(ids) if len(ids) == limit else None)

    def replay(self, job_id: str) -> dict[str, Any]:
        """Send a dead job again (its records and pinned version as accepted); returns it, queued. Any other
        state is a ``Conflict``; a chunk is replayed with its batch, not alone."""
        if parent_of(job_id) is not None:
            raise Conflict(f"job {job_id} is a chunk of batch {parent_of(job_id)}: a chunk is not replayed alone",
                           job=job_id, batch=parent_of(job_id))
        if len(job_id) > MAX_JOB_ID:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        now, keys = self.jobs.clock(), self.jobs.keys
        reply = self.jobs.scripts.call("replay", [keys.job(job_id), keys.pending, keys.dead, keys.backlog(""),
                                                  keys.stats], [now, self.jobs.ttl, job_id, now + self.jobs.requeue])
        if reply is None:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        outcome = reply[0].decode()
        if outcome == "state":
            state = reply[1].decode()
            raise Conflict(f"job {job_id} is {state}; only dead jobs (and jobs stopped by their time limit) can be "
                           f"replayed", state=state, job=job_id)
        if outcome == "gone":
            raise Conflict(f"job {job_id} died without its records kept; it cannot be replayed", job=job_id)
        job = self.jobs.get(job_id)  # as replayed (queued): read before it is sent, or a fast worker's start shows
        self.jobs.publish([(reply[1].decode(), [job_id])])
        return job

    def count(self) -> int:
        return int(self.jobs.redis.zcard(self.jobs.keys.dead))
