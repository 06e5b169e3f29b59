"""Batch files as jobs: planning chunks, cancelling, files to delete, and the schedule of webhooks.

A batch is a job of kind ``batch`` on the bulk queue. Its first delivery plans it (``plan``: one chunk job
per slice of rows, ids ``<batch>.<index>``, each leased, swept and retried like any job); while its chunks
are scored the batch is ``running`` without a holder; the finish script counts each chunk once and, when
the last is done or one failed, queues the batch again for its merge delivery, which writes the output
(or fails the batch naming the chunk).
"""

from __future__ import annotations

from typing import Any

import orjson

from batcomputer.errors import Conflict
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import CANCELLED, KIND_CHUNK, QUEUE_BULK, QUEUED, RUNNING, chunk_id
from batcomputer.jobqueue.records import iso
from batcomputer.jobqueue.webhooks import WEBHOOK_HOLD_SECONDS


class BatchStore:
    """The batch side of the job store (same Redis, same keys, same clock)."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.redis: Any = jobs.redis
        self.keys = jobs.keys

    def plan(self, batch_id: str, holder: str, model: str, version: int, bundle_sha256: str,
             chunks: list[tuple[int, int, dict[str, Any]]]) -> list[str] | None:
        """Write the chunks ``(index, rows, what to read)`` of a batch this holder is planning; returns the
        ids to send (None: the batch is no longer this holder's)."""
        now = self.jobs.clock()
        common = {"state": QUEUED, "kind": KIND_CHUNK, "parent": batch_id, "model": model, "version": str(version),
                  "bundle_sha256": bundle_sha256, "queue": QUEUE_BULK, "created": iso(now), "attempts": "0"}
        args: list[Any] = [now, self.jobs.ttl, now + self.jobs.requeue, batch_id, holder, self.keys.job_prefix,
                           len(chunks), sum(rows for _, rows, _ in chunks), orjson.dumps(common)]
        for index, rows, payload in chunks:
            args += [index, rows, orjson.dumps(payload)]
        reply = self.jobs.scripts.call("plan", [self.keys.job(batch_id), self.keys.pending,
                                                self.keys.backlog(QUEUE_BULK)], args)
        return None if reply is None else [item.decode() for item in reply]

    def live_processes(self, queue: str = QUEUE_BULK) -> int:
        """Worker processes on ``queue`` whose heartbeat is recent (within a lease)."""
        return self.jobs.leases.live(queue)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Cancel a batch that is not final: it and its outstanding chunks end ``cancelled`` (a chunk being
        scored finds out before it commits) and its partial output is deleted by the workers at once."""
        job = self.jobs.get(batch_id)
        done, state, _ = self.jobs.settle([(batch_id, CANCELLED, {})], allowed=f"{QUEUED},{RUNNING}")[0]
        if not done:
            raise Conflict(f"job {batch_id} is {state}; only a batch that is queued or running can be cancelled",
                           state=state, job=batch_id)
        self.stop_chunks(batch_id, int(job.get("chunks_total", 0)))
        self.discard(batch_id)
        return self.jobs.get(batch_id)

    def stop_chunks(self, batch_id: str, total: int) -> None:
        if total:
            self.jobs.settle([(chunk_id(batch_id, index), CANCELLED, {}) for index in range(total)],
                           allowed=f"{QUEUED},{RUNNING}")

    def discard(self, batch_id: str) -> None:
        """Delete now what a batch that will not succeed wrote: its parts, and its output if Batcomputer
        named it (a client's own output URI is only ever replaced whole, by a successful batch)."""
        parts, output, owned = self.redis.hmget(self.keys.job(batch_id), "parts", "output", "owned")
        doomed = [parts.decode()] if parts else []
        if owned and output:
            doomed.append(output.decode())
        self.expire_files(doomed, 0)

    # -- files to delete, and webhooks ----------------------------------------------------------

    def expire_files(self, urls: list[str], after: float) -> None:
        if urls:
            self.redis.zadd(self.keys.files, {url: self.jobs.clock() + after for url in urls})

    def due_files(self, limit: int = 100) -> list[str]:
        return [url.decode() for url in self.redis.zrangebyscore(self.keys.files, "-inf", self.jobs.clock(),
                                                                   start=0, num=limit)]

    def claim_output(self, url: str, owner: str) -> str | None:
        """Record ``owner`` as the writer of the output ``url`` unless another key's batch claimed it first;
        returns that other key's name (nothing recorded), or None."""
        if self.redis.hsetnx(self.keys.writers, url, owner):
            return None
        writer = self.redis.hget(self.keys.writers, url)
        return None if writer is None or writer.decode() == owner else writer.decode()

    def forget_files(self, urls: list[str]) -> None:
        if urls:
            self.redis.zrem(self.keys.files, *urls)

    def schedule_webhook(self, batch_id: str, delay: float = 0) -> None:
        self.redis.zadd(self.keys.webhooks, {batch_id: self.jobs.clock() + delay})

    def claim_webhooks(self, limit: int = 20) -> list[str]:
        reply = self.jobs.scripts.call("claim_webhooks", [self.keys.webhooks],
                                       [self.jobs.clock(), WEBHOOK_HOLD_SECONDS, limit])
        return [item.decode() for item in reply]

    def record_webhook(self, batch_id: str, outcome: dict[str, Any], retry_in: float | None) -> None:
        """Write a delivery's outcome on the job; schedule the next attempt, or stop."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.job(batch_id), "webhook", orjson.dumps(outcome))
            if retry_in is None:
                pipe.zrem(self.keys.webhooks, batch_id)
            else:
                pipe.zadd(self.keys.webhooks, {batch_id: self.jobs.clock() + retry_in})
            pipe.execute()
