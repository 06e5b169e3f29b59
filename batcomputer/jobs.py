"""Jobs: task and queue names, job states, and the job records in Redis shared by gateway and workers."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from batcomputer.errors import Conflict, NotFound

TASK_SCORE = "batcomputer.score"
QUEUE_RECORDS = "records"  # interactive: small jobs, scored in micro-batches
QUEUE_BULK = "bulk"        # large record lists (and later files): never in the way of interactive work
QUEUES = (QUEUE_RECORDS, QUEUE_BULK)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, DEAD = "queued", "running", "succeeded", "failed", "cancelled", "dead"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, DEAD)
FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DEAD})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_job_id() -> str:
    return uuid.uuid4().hex


def body_digest(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Start:
    """What a worker learns when it starts a delivery of a job."""

    state: str | None  # None: the job record is gone (expired); "busy": another delivery holds the lease
    attempts: int
    model: str = ""
    version: int = 0
    records: list[dict[str, Any]] | None = None


# Start a delivery: count it and take the job's lease, atomically. A job already final is left alone; a job
# whose lease another delivery still holds is "busy" (a duplicate message), and is not counted.
_START = """
local job = KEYS[1]
local state = redis.call('HGET', job, 'state')
if not state then return {false, 0} end
if state ~= 'queued' and state ~= 'running' then
  return {state, tonumber(redis.call('HGET', job, 'attempts'))}
end
local now = tonumber(ARGV[2])
local lease = tonumber(redis.call('HGET', job, 'lease_until') or '0')
if state == 'running' and lease > now then
  return {'busy', tonumber(redis.call('HGET', job, 'attempts'))}
end
local attempts = redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'state', 'running', 'started', ARGV[1], 'lease_until', now + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
local fields = redis.call('HMGET', job, 'model', 'version', 'payload')
return {'running', attempts, fields[1], fields[2], fields[3]}
"""

# Finish a job unless it already reached a final state; wake whoever waits for it.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state ~= 'queued' and state ~= 'running' then return 0 end
for i = 1, #ARGV - 2, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'payload', 'lease_until')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[#ARGV - 1]))
redis.call('ZREM', KEYS[3], ARGV[#ARGV])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], 60)
local inbox = redis.call('HGET', KEYS[1], 'inbox')
if inbox then
  redis.call('RPUSH', inbox, ARGV[#ARGV])
  redis.call('EXPIRE', inbox, 300)
end
return 1
"""


class JobStore:
    """Job records: the source of truth for every accepted job. Hashes under ``<prefix>job:<id>`` hold the
    state, the pinned version, the attempts, the records until the job is final, then the results. Queue
    messages carry only the job id: a lost message is re-sent by ``sweep`` from the record.

    ``<prefix>jobs`` indexes jobs by creation time; ``<prefix>pending`` holds each unfinished job with the
    time by which it must be final or be delivered again (its lease).
    """

    def __init__(self, client: redis.Redis, prefix: str = "bc:", ttl_seconds: int = 86_400,
                 lease_seconds: int = 3_600) -> None:
        self.redis: Any = client  # redis-py's typing of replies is loose; replies are bytes here
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.lease = lease_seconds
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._loaded = False

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _done_key(self, job_id: str) -> str:
        return f"{self.prefix}done:{job_id}"

    @property
    def _pending(self) -> str:
        return f"{self.prefix}pending"

    # -- gateway side ----------------------------------------------------------------------------

    def create(self, job_id: str, model: str, version: int, bundle_sha256: str, records: list[dict[str, Any]],
               queue: str, alias: str | None = None, inbox: str | None = None) -> dict[str, Any]:
        """Write a new job; with ``inbox``, its id is pushed onto that list when it ends. Returns the job."""
        created = time.time()
        record: dict[str, Any] = {"id": job_id, "state": QUEUED, "model": model, "version": version,
                                  "bundle_sha256": bundle_sha256, "alias": alias or "", "count": len(records),
                                  "queue": queue, "created": now_iso(), "attempts": 0}
        stored = {**record, "payload": json.dumps(records), **({"inbox": inbox} if inbox else {})}
        with self.redis.pipeline() as pipe:
            pipe.hset(self._key(job_id), mapping=stored)
            pipe.expire(self._key(job_id), self.ttl)
            pipe.zadd(f"{self.prefix}jobs", {job_id: created})
            pipe.zadd(self._pending, {job_id: created + self.lease})
            pipe.execute()
        if not alias:
            record.pop("alias")
        return record

    def claim_idempotency_key(self, key: str, digest: str, job_id: str) -> str | None:
        """Reserve ``key`` for a new job; return the existing job id if the same request came before.

        Raises ``Conflict`` when the key was used with another body.
        """
        redis_key = f"{self.prefix}idempotency:{body_digest(key)}"
        if self.redis.set(redis_key, f"{job_id} {digest}", nx=True, ex=self.ttl):
            return None
        raw = self.redis.get(redis_key)
        if raw is None:  # expired between the two calls: claim it again
            return self.claim_idempotency_key(key, digest, job_id)
        existing, _, seen_digest = raw.decode().partition(" ")
        if seen_digest != digest:
            raise Conflict(f"Idempotency-Key {key!r} was already used with a different request",
                           field="Idempotency-Key")
        return existing

    def release_idempotency_key(self, key: str) -> None:
        self.redis.delete(f"{self.prefix}idempotency:{body_digest(key)}")

    def get(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.hgetall(self._key(job_id)) if len(job_id) <= 64 else {}
        if not raw:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        return decode(raw)

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """Return the job once it is final, or as it is after ``timeout`` seconds."""
        job = self.get(job_id)
        if job["state"] in FINAL or timeout <= 0:
            return job
        if not self.redis.blpop([self._done_key(job_id)], timeout=timeout):
            return self.get(job_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._done_key(job_id), "1")  # leave the signal for any other waiter
            pipe.expire(self._done_key(job_id), 60)
            pipe.hgetall(self._key(job_id))
            raw = pipe.execute()[2]
        if not raw:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        return decode(raw)

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] != QUEUED or not self.end([(job_id, CANCELLED, {})])[0]:
            raise Conflict(f"job {job_id} is {job['state']}; only queued jobs can be cancelled", state=job["state"])
        return self.get(job_id)

    def recent(self, state: str | None = None, model: str | None = None, offset: int = 0,
               limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        """Jobs newest first, filtered; returns a page and the offset of the next page (None at the end)."""
        found: list[dict[str, Any]] = []
        position = offset
        chunk = max(limit * 4, 100)
        while len(found) < limit:
            ids = self.redis.zrevrange(f"{self.prefix}jobs", position, position + chunk - 1)
            if not ids:
                return found, None
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self._key(job_id.decode()))
                rows = pipe.execute()
            for index, raw in enumerate(rows):
                if not raw:
                    continue
                job = decode(raw, with_results=False)
                if (state and job["state"] != state) or (model and job["model"] != model):
                    continue
                found.append(job)
                if len(found) == limit:
                    return found, position + index + 1
            position += len(ids)
        return found, position

    # -- worker side -----------------------------------------------------------------------------

    def _scripted(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """Run (script, keys, args) calls in one pipelined round trip of EVALSHA (no SCRIPT EXISTS first);
        load the scripts once when Redis does not know them (first use, or after a restart)."""
        for attempt in (1, 2):
            if not self._loaded:
                for script in (self._start, self._finish):
                    script.sha = self.redis.script_load(script.script)
                self._loaded = True
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for script, keys, args in calls:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._loaded = False
        return []

    def start(self, job_ids: list[str]) -> list[Start]:
        """Start a delivery of each job (one round trip for all of them)."""
        replies = self._scripted([(self._start, [self._key(job_id), self._pending],
                                   [now_iso(), time.time(), self.lease, job_id]) for job_id in job_ids])
        starts = []
        for reply in replies:
            state = reply[0].decode() if isinstance(reply[0], bytes) else None
            if state != RUNNING:
                starts.append(Start(state, int(reply[1] or 0)))
            else:
                starts.append(Start(state, int(reply[1]), reply[2].decode(), int(reply[3]),
                                    json.loads(reply[4] or b"[]")))
        return starts

    def end(self, outcomes: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Record each ``(job_id, state, fields)`` unless the job is final already; wake its waiters."""
        calls = []
        for job_id, state, fields in outcomes:
            args: list[Any] = ["state", state, "finished", now_iso()]
            for key, value in fields.items():
                args += [key, value if isinstance(value, str) else json.dumps(value)]
            calls.append((self._finish, [self._key(job_id), self._done_key(job_id), self._pending],
                          [*args, self.ttl, job_id]))
        return [bool(r) for r in self._scripted(calls)]

    def sweep(self, resend: Callable[[str, str], None], limit: int = 500) -> int:
        """Deliver again every unfinished job whose lease ran out (its message or its worker was lost).

        ``resend(job_id, queue)`` publishes a new message. One sweeper at a time, across all workers.
        """
        if not self.redis.set(f"{self.prefix}sweeper", "1", nx=True, ex=60):
            return 0
        try:
            now = time.time()
            self.redis.zremrangebyscore(f"{self.prefix}jobs", 0, now - self.ttl)  # expired jobs leave the index
            due = [i.decode() for i in self.redis.zrangebyscore(self._pending, 0, now, start=0, num=limit)]
            sent = 0
            for job_id in due:
                raw = self.redis.hmget(self._key(job_id), "state", "queue")
                state, queue = (v.decode() if v else None for v in raw)
                if state not in (QUEUED, RUNNING):
                    self.redis.zrem(self._pending, job_id)
                    continue
                self.redis.zadd(self._pending, {job_id: now + self.lease})
                resend(job_id, queue or QUEUE_RECORDS)
                sent += 1
            return sent
        finally:
            self.redis.delete(f"{self.prefix}sweeper")


def decode(raw: dict[bytes, bytes], with_results: bool = True) -> dict[str, Any]:
    job: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for key in ("version", "count", "attempts"):
        if key in job:
            job[key] = int(job[key])
    for internal in ("payload", "lease_until", "inbox"):
        job.pop(internal, None)
    if not job.get("alias"):
        job.pop("alias", None)
    results = job.pop("results", None)
    if with_results and results is not None:
        job["results"] = json.loads(results)
    if "error" in job:
        job["error"] = json.loads(job["error"])
    return job
