"""Batch files as jobs: planning chunks, cancelling, progress, files to delete, webhooks and their signature.

A batch is a job of kind ``batch`` on the bulk queue. Its first delivery plans it (``plan``: one chunk job
per slice of rows, ids ``<batch>.<index>``, each leased, swept and retried like any job); while its chunks
are scored the batch is ``running`` without a holder; the finish script counts each chunk once and, when
the last is done or one failed, queues the batch again for its merge delivery, which writes the output
(or fails the batch naming the chunk).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from batcomputer.errors import BatcomputerError, Conflict
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import CANCELLED, PHASE_SCORE, QUEUE_BULK, QUEUED, RUNNING, chunk_id

SIGNATURE_HEADER = "Batcomputer-Signature"  # t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>
DELIVERY_HEADER = "Batcomputer-Delivery"    # the job id and attempt: a receiver can drop repeats
WEBHOOK_BACKOFF_SECONDS = (0, 5, 30, 120, 600, 1800)  # attempt n waits this long after the one before
WEBHOOK_HOLD_SECONDS = 60  # a claimed delivery is retried by another worker if this one has not answered

# KEYS: batch, pending, the bulk queue's backlog.  ARGV: now, ttl, when chunks are due, batch id, holder, job
# key prefix, chunk count, row count, the chunks' common fields (JSON object), then per chunk: index, rows, payload.
# Creates the chunk jobs that do not exist yet (a plan is written once: a second planner that lost its
# lease finds the batch no longer its own) and moves the batch to scoring: no holder, not swept (its chunks
# are). Returns the new chunk ids, or false when this holder no longer holds the batch.
_PLAN = """
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' or redis.call('HGET', KEYS[1], 'holder') ~= ARGV[5] then
  return false
end
local common = cjson.decode(ARGV[9])
local shared = {}
for name, value in pairs(common) do
  shared[#shared + 1] = name
  shared[#shared + 1] = value
end
local fresh = {}
for i = 10, #ARGV, 3 do
  local id = ARGV[4] .. '.' .. ARGV[i]
  local key = ARGV[6] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'id', id, 'index', ARGV[i], 'count', ARGV[i + 1], 'payload', ARGV[i + 2], unpack(shared))
    redis.call('EXPIRE', key, tonumber(ARGV[2]))
    redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), id)
    redis.call('ZADD', KEYS[3], tonumber(ARGV[1]), id)
    fresh[#fresh + 1] = id
  end
end
redis.call('HSET', KEYS[1], 'phase', 'SCORE', 'chunks_total', ARGV[7], 'chunks_done', '0', 'rows_total', ARGV[8],
           'rows_done', '0', 'rows_failed', '0', 'count', ARGV[8], 'scoring_started', ARGV[1])
redis.call('HDEL', KEYS[1], 'holder')
redis.call('ZREM', KEYS[2], ARGV[4])
return fresh
""".replace("RUNNING", RUNNING).replace("SCORE", PHASE_SCORE)

# KEYS: webhooks.  ARGV: now, hold seconds, limit.  Takes due deliveries for this worker: each is pushed
# back by the hold time, so that a worker that dies mid-delivery leaves it to another.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id) end
return due
"""


class CallbackRefused(BatcomputerError):
    """A callback_url Batcomputer will not call: another scheme, a host not allowed, or webhooks off."""

    code = "callback_refused"
    status = 422
    title = "Callback URL refused"


def check_callback(url: Any, hosts: str, secret: str | None) -> str:
    """``url`` if batches may call it back (``BATCOMPUTER_WEBHOOK_HOSTS``, signed with the secret)."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url.strip():
        raise CallbackRefused("callback_url must be an http(s) URL", field="callback_url")
    if not secret:
        raise CallbackRefused("webhooks are off: the operator has not set BATCOMPUTER_WEBHOOK_SECRET",
                              field="callback_url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise CallbackRefused(f"callback_url {url!r} is not a valid URL", field="callback_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused(f"callback_url must be an http(s) URL, not {url!r}", field="callback_url")
    allowed = {host.strip().lower() for host in hosts.split(",") if host.strip()}
    host = parts.hostname.lower()
    if host not in allowed and (port is None or f"{host}:{port}" not in allowed):
        raise CallbackRefused(f"callback_url: the host {host!r} is not one webhooks may be sent to "
                              f"(BATCOMPUTER_WEBHOOK_HOSTS: {', '.join(sorted(allowed)) or 'none'})",
                              field="callback_url", host=host)
    return url.strip()


class BatchStore:
    """The batch side of the job store (same Redis, same keys, same clock)."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.redis: Any = jobs.redis
        self.keys = jobs.keys
        self._plan = self.redis.register_script(_PLAN)
        self._claim = self.redis.register_script(_CLAIM)

    def plan(self, batch_id: str, holder: str, model: str, version: int, bundle_sha256: str,
             chunks: list[tuple[int, int, dict[str, Any]]]) -> list[str] | None:
        """Write the chunks ``(index, rows, what to read)`` of a batch this holder is planning; returns the
        ids to send (None: the batch is no longer this holder's)."""
        from batcomputer.jobqueue.jobs import iso
        from batcomputer.jobqueue.keyspace import KIND_CHUNK, QUEUE_BULK

        now = self.jobs.clock()
        common = {"state": QUEUED, "kind": KIND_CHUNK, "parent": batch_id, "model": model, "version": str(version),
                  "bundle_sha256": bundle_sha256, "queue": QUEUE_BULK, "created": iso(now), "attempts": "0"}
        args: list[Any] = [now, self.jobs.ttl, now + self.jobs.requeue, batch_id, holder, self.keys.job_prefix,
                           len(chunks), sum(rows for _, rows, _ in chunks), orjson.dumps(common)]
        for index, rows, payload in chunks:
            args += [index, rows, orjson.dumps(payload)]
        reply = self._plan(keys=[self.keys.job(batch_id), self.keys.pending, self.keys.backlog(QUEUE_BULK)],
                           args=args)
        return None if reply is None else [item.decode() for item in reply]

    def live_processes(self, queue: str = QUEUE_BULK) -> int:
        """Worker processes on ``queue`` whose heartbeat is recent (within a lease)."""
        return int(self.redis.zcount(self.keys.workers(queue), self.jobs.clock() - self.jobs.lease, "+inf"))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Cancel a batch that is not final: it and its outstanding chunks end ``cancelled`` (a chunk being
        scored finds out before it commits) and its partial output is deleted by the workers at once."""
        job = self.jobs.get(batch_id)
        done, state, _ = self.jobs._end([(batch_id, CANCELLED, {})], allowed=f"{QUEUED},{RUNNING}")[0]
        if not done:
            raise Conflict(f"job {batch_id} is {state}; only a batch that is queued or running can be cancelled",
                           state=state, job=batch_id)
        self.stop_chunks(batch_id, int(job.get("chunks_total", 0)))
        self.discard(batch_id)
        return self.jobs.get(batch_id)

    def stop_chunks(self, batch_id: str, total: int) -> None:
        if total:
            self.jobs._end([(chunk_id(batch_id, index), CANCELLED, {}) for index in range(total)],
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

    def forget_files(self, urls: list[str]) -> None:
        if urls:
            self.redis.zrem(self.keys.files, *urls)

    def schedule_webhook(self, batch_id: str, delay: float = 0) -> None:
        self.redis.zadd(self.keys.webhooks, {batch_id: self.jobs.clock() + delay})

    def claim_webhooks(self, limit: int = 20) -> list[str]:
        reply = self._claim(keys=[self.keys.webhooks], args=[self.jobs.clock(), WEBHOOK_HOLD_SECONDS, limit])
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


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Batcomputer-Signature`` header of a webhook delivery."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
