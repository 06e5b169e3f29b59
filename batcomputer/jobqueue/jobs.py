"""Job records in Redis shared by gateway and workers: atomic creation, leased deliveries, finish-once, sweeping.

The lifecycle, and the Lua scripts that keep each step atomic:

* ``create`` (gateway): claims the Idempotency-Key and writes the job in one script, so a concurrent retry
  with the same key always finds a job, and a failed create leaves no key behind.
* ``start`` (worker): takes the job for one delivery. A job already final, or held by another worker whose
  lease is alive, is left alone (a duplicate delivery); a queued job, or one whose holder's lease ran out, is
  taken, and the delivery counted in ``attempts``.
* Leases belong to worker processes, not jobs: each process renews its own entry in ``holders`` from a
  heartbeat thread (``renew``), so a long job is never cut short while its worker lives, and the cost does
  not grow with the jobs it holds.
* ``end`` (worker, or ``cancel``): writes the outcome once, only from the states the caller expects; a late
  duplicate never overwrites a result, and is counted (``rescored``) if the model ran for it anyway.
* ``publish`` (gateway and sweeper): the message goes to the queue and its jobs are marked sent, in one step.
* ``sweep`` (one worker at a time): looks at jobs whose check time passed. A running job whose holder is gone
  goes back to ``queued`` and is sent again; a queued job whose message never reached the broker is sent; a
  queued job whose message was sent is sent again when its queue has no backlog (the message sits with a dead
  worker until the broker's visibility timeout, or was lost); behind a backlog its next check is postponed,
  further each time, and after ``SENT_PATIENCE`` postponements it is sent anyway (seven requeue periods in
  all, 3.5 minutes by default), so even a message lost while its queue never empties comes back.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from string import Template
from typing import Any

import orjson
import redis

from batcomputer.errors import Conflict, NotFound, TooManyRequests
from batcomputer.jobqueue.broker import task_message
from batcomputer.jobqueue.keyspace import (
    BUSY,
    CANCELLED,
    DEAD,
    DRAIN_BUCKET_SECONDS,
    FINAL,
    KIND_BATCH,
    PHASE_MERGE,
    PHASE_SCORE,
    QUEUE_BULK,
    QUEUE_RECORDS,
    QUEUED,
    QUEUES,
    RUNNING,
    STAT_DEAD,
    STAT_DUPLICATES,
    STAT_REPLAYED,
    STAT_RESCORED,
    STAT_RESENT,
    SUCCEEDED,
    Keys,
    parent_of,
)
from batcomputer.settings import Settings

Clock = Callable[[], float]
MAX_JOB_ID = 64
SUMMARY_FIELDS = ("id", "state", "model", "version", "bundle_sha256", "alias", "count", "queue", "created",
                  "started", "finished", "attempts", "error", "kind", "owner")
BATCH_COUNTS = ("rows_total", "rows_done", "rows_failed", "chunks_total", "chunks_done")
BATCH_INTERNAL = ("owned", "parts", "upload", "failed_chunk")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


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

    state: str | None  # None: the job record is gone (expired); BUSY: another live worker holds it
    attempts: int
    model: str = ""
    version: int = 0
    records: Any = None  # the clean records; for a batch or a chunk, what to read and where to write
    phase: str | None = None  # a batch's: plan (no phase yet) or merge
    created: float | None = None  # when the job was accepted (seconds)
    queue: str = ""


@dataclass(frozen=True)
class Payload:
    """A job's clean records, already as JSON (the gateway's one-pass decoder writes them so)."""

    json: bytes
    count: int


@dataclass(frozen=True)
class Created:
    """The outcome of ``create``: a new job, or the job an earlier request with the same key created."""

    job_id: str
    new: bool
    job: dict[str, Any] | None = None


# KEYS: job, jobs index, pending, the queue's backlog, counters [, idempotency key]
# ARGV: now, ttl, job id, next check time, body digest, job key prefix, the job's fields as a JSON object of
# strings (one argument: cheaper to send than a pair per field), its records (JSON), the queue's depth limit
# (0: none), the counter to add one to.
# With an idempotency key: a key already held for the same digest whose job still exists returns that job's
# id; another digest is a conflict; a key whose job expired is claimed again. The job's hash is written in
# the same script, so no key ever points at nothing. A queue holding ``limit`` unfinished jobs takes no new
# one: {'full', depth} (admission control; a repeat of an accepted request is still answered).
# The scripts name states, queues and counters as $placeholders, filled from the keyspace (their one owner).
SENT_PATIENCE = 3  # checks that find a sent job's queue busy before it is sent again anyway
_NAMES = {"patience": str(SENT_PATIENCE), "final": "," + ",".join(sorted(FINAL)) + ",",
          "queued": QUEUED, "running": RUNNING, "busy": BUSY, "succeeded": SUCCEEDED, "cancelled": CANCELLED,
          "dead": DEAD, "score": PHASE_SCORE, "merge": PHASE_MERGE,
          "records": QUEUE_RECORDS,
          "duplicates": STAT_DUPLICATES, "rescored": STAT_RESCORED, "resent": STAT_RESENT,
          "replayed": STAT_REPLAYED}

_CREATE = """
if #KEYS == 6 then
  local seen = redis.call('GET', KEYS[6])
  if seen then
    local id, digest = string.match(seen, '^(%S+) (%S+)$')
    if digest ~= ARGV[5] then return {'conflict', id} end
    if redis.call('EXISTS', ARGV[6] .. id) == 1 then return {'existing', id} end
  end
end
local limit = tonumber(ARGV[9])
if limit > 0 then
  local depth = redis.call('ZCARD', KEYS[4])
  if depth >= limit then return {'full', tostring(depth)} end
end
if #KEYS == 6 then redis.call('SET', KEYS[6], ARGV[3] .. ' ' .. ARGV[5], 'EX', tonumber(ARGV[2])) end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[7])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], 'payload', ARGV[8], unpack(fields))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[3])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[3])
redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[10], 1)
return {'created', ARGV[3]}
"""

# KEYS: job, pending, holders, stats.  ARGV: now, now (ISO text), lease seconds, job id, holder.
# Returns {state, attempts[, model, version, payload, phase, created, queue]}. A batch whose chunks are being scored is
# running without a holder of its own: a delivery of it then is a duplicate.
_START = """
local job = KEYS[1]
local state = redis.call('HGET', job, 'state')
if not state then return {false, 0} end
local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
if state ~= '$queued' and state ~= '$running' then
  redis.call('HINCRBY', KEYS[4], '$duplicates', 1)
  return {state, attempts}
end
local now = tonumber(ARGV[1])
if state == '$running' then
  local holder = redis.call('HGET', job, 'holder')
  local lease = holder and tonumber(redis.call('ZSCORE', KEYS[3], holder) or '0') or 0
  if lease > now or redis.call('HGET', job, 'phase') == '$score' then
    redis.call('HINCRBY', KEYS[4], '$duplicates', 1)
    return {'$busy', attempts}
  end
end
attempts = redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'state', '$running', 'started', ARGV[2], 'holder', ARGV[5])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
local fields = redis.call('HMGET', job, 'model', 'version', 'payload', 'phase', 'created', 'queue')
return {'$running', attempts, fields[1], fields[2], fields[3], fields[4] or '', fields[5] or '', fields[6] or ''}
"""

# KEYS: job, pending, stats, counters, dead index[, the batch of a chunk].  ARGV: allowed states
# (comma-separated), ttl, job id, when a batch whose chunks are all done is due, the backlog key of queue ''
# (a queue's name completes it), the drain counter of queue '' in this window (likewise), now, then field
# pairs.
# Writes the outcome only from an allowed state; takes the job off its queue's backlog and counts it in the
# drain rate and the counters; a dead job keeps its records (for a replay) and joins the dead index. Wakes
# whoever waits: the requester's
# inboxes (the submitter's, and any a waiting reader added with ``watch``), which get "<job id> <the final job
# as JSON, but its results>\n<its results, as stored>" so that the waiting request needs no read of its own,
# and passes the results on without parsing them.
# An outcome for a job that is already final is refused and, when it came from a worker, counted: it means
# the model ran twice for one job.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, false} end
if not string.find(',' .. ARGV[1] .. ',', ',' .. state .. ',', 1, true) then
  if string.find(ARGV[1], '$running', 1, true) and state ~= '$queued' and state ~= '$running'
      and state ~= '$cancelled' then
    redis.call('HINCRBY', KEYS[3], '$rescored', 1)
  end
  return {0, state}
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local outcome = redis.call('HGET', KEYS[1], 'state')
if outcome == '$dead' then
  redis.call('HDEL', KEYS[1], 'holder')
  redis.call('ZADD', KEYS[5], tonumber(ARGV[7]), ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'payload', 'holder')
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZREM', KEYS[2], ARGV[3])
local meta = redis.call('HMGET', KEYS[1], 'queue', 'model')
local queue = meta[1] or '$records'
redis.call('ZREM', ARGV[5] .. queue, ARGV[3])
local drained = ARGV[6] .. queue
redis.call('INCR', drained)
redis.call('EXPIRE', drained, 120)
redis.call('HINCRBY', KEYS[4], 'ended|' .. (meta[2] or '') .. '|' .. outcome, 1)
-- A chunk counts towards its batch once. When the last one is done, or one failed, the batch is queued
-- for its merge delivery (which writes the output, or fails the batch naming the chunk).
local merge = false
local batch = KEYS[6]
if batch and redis.call('HGET', batch, 'state') == '$running'
    and redis.call('HGET', batch, 'phase') == '$score' then
  if outcome == '$succeeded' then
    redis.call('HINCRBY', batch, 'rows_done', tonumber(redis.call('HGET', KEYS[1], 'count') or '0'))
    redis.call('HINCRBY', batch, 'rows_failed', tonumber(redis.call('HGET', KEYS[1], 'rows_failed') or '0'))
    local done = redis.call('HINCRBY', batch, 'chunks_done', 1)
    merge = done >= tonumber(redis.call('HGET', batch, 'chunks_total') or '0')
  elseif outcome ~= '$cancelled' then
    redis.call('HSET', batch, 'failed_chunk', ARGV[3])
    merge = true
  end
  if merge then
    merge = string.match(ARGV[3], '^([^.]+)%.')
    redis.call('HSET', batch, 'state', '$queued', 'phase', '$merge', 'attempts', '0')
    redis.call('HDEL', batch, 'sent', 'holder')
    redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), merge)
  end
end
local inboxes = redis.call('HGET', KEYS[1], 'inbox')
if inboxes then
  local flat = redis.call('HGETALL', KEYS[1])
  local job = {}
  for i = 1, #flat, 2 do job[flat[i]] = flat[i + 1] end
  job['inbox'] = nil
  job['sent'] = nil
  local results = job['results'] or ''
  job['results'] = nil
  local entry = ARGV[3] .. ' ' .. cjson.encode(job) .. '\\n' .. results
  for inbox in string.gmatch(inboxes, '%S+') do
    redis.call('RPUSH', inbox, entry)
    redis.call('EXPIRE', inbox, 300)
  end
end
return {1, state, merge}
"""

# KEYS: pending, holders, stats.  ARGV: now, lease seconds, requeue seconds, job key prefix, queue key prefix,
# limit, whether Redis restarted since the last sweep ('1'/'0').  Returns a flat list {job id, queue, ...} of
# jobs to send again. After a restart every queued job is sent again at once, whatever its queue holds: a
# message a worker had popped but not yet recorded as unacknowledged when Redis went down is gone, and a busy
# queue would otherwise hide that for minutes (a duplicate is harmless: ``start`` skips it).
# A queued job's 'sent' field counts the checks that found its queue busy (1 after publishing): each such
# check postpones the next one by one more requeue period, and after SENT_PATIENCE of them the job is sent again
# anyway (its message may have been lost while the queue never emptied; a duplicate is harmless).
_SWEEP = """
local now = tonumber(ARGV[1])
local restarted = ARGV[7] == '1'
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', restarted and '+inf' or now, 'LIMIT', 0, tonumber(ARGV[6]))
local resend = {}
local backlog = {}
for _, id in ipairs(due) do
  local job = ARGV[4] .. id
  local fields = redis.call('HMGET', job, 'state', 'queue', 'holder')
  local state, queue, holder = fields[1], fields[2] or '$records', fields[3]
  if state == '$running' then
    local lease = holder and tonumber(redis.call('ZSCORE', KEYS[2], holder) or '0') or 0
    if lease > now then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    else
      redis.call('HSET', job, 'state', '$queued')
      redis.call('HDEL', job, 'holder', 'sent')
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
      resend[#resend + 1] = id
      resend[#resend + 1] = queue
    end
  elseif state == '$queued' then
    local sent = tonumber(redis.call('HGET', job, 'sent') or '0')
    if sent > 0 and backlog[queue] == nil then backlog[queue] = redis.call('LLEN', ARGV[5] .. queue) > 0 end
    if sent == 0 or restarted or not backlog[queue] or sent > $patience then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
      resend[#resend + 1] = id
      resend[#resend + 1] = queue
    else
      redis.call('HSET', job, 'sent', sent + 1)
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) * sent, id)
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
if #resend > 0 then redis.call('HINCRBY', KEYS[3], '$resent', #resend / 2) end
return resend
"""

# KEYS: job, pending.  ARGV: holder, now, job id.  A worker that cannot finish a delivery it started (an
# error between start and end) gives the job back: queued again, due for the sweeper at once, and unsent
# (the broker dropped the failed delivery's message), so a busy queue does not hide it.
_GIVE_BACK = """
if redis.call('HGET', KEYS[1], 'state') ~= '$running' or redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', '$queued')
redis.call('HDEL', KEYS[1], 'holder', 'sent')
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[3])
return 1
"""

# KEYS: queue, then the jobs the message carries.  ARGV: the message.  Puts the message on the queue (what
# kombu's Redis transport does: LPUSH, consumers BRPOP) and marks its jobs sent, in one step.
_PUBLISH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HSET', KEYS[i], 'sent', '1') end
end
return #KEYS - 1
"""

# KEYS: job.  ARGV: inbox key.  A final job's fields; otherwise the inbox is added to those the finish script
# wakes, and the reply is empty. False: no such job.
_WATCH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if string.find('$final', ',' .. state .. ',', 1, true) then return redis.call('HGETALL', KEYS[1]) end
local inboxes = redis.call('HGET', KEYS[1], 'inbox')
if not inboxes then
  redis.call('HSET', KEYS[1], 'inbox', ARGV[1])
elseif not string.find(' ' .. inboxes .. ' ', ' ' .. ARGV[1] .. ' ', 1, true) then
  redis.call('HSET', KEYS[1], 'inbox', inboxes .. ' ' .. ARGV[1])
end
return {}
"""

# KEYS: job, pending, dead index, the job's queue's backlog of queue '' (its name completes it), stats.
# ARGV: now, ttl, job id, next check time.  Sends a dead job again, with its records as they were accepted
# and its pinned version: queued, attempts from zero, its error gone; 'replays' counts how often.
# Returns {'replayed', queue}, {'state', state} for a job that is not dead, {'gone'} when its records were
# not kept (it died before replays existed), false for no such job.
_REPLAY = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= '$dead' then return {'state', state} end
if redis.call('HEXISTS', KEYS[1], 'payload') == 0 then return {'gone'} end
local queue = redis.call('HGET', KEYS[1], 'queue') or '$records'
redis.call('HSET', KEYS[1], 'state', '$queued', 'attempts', '0')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('HDEL', KEYS[1], 'error', 'finished', 'started', 'holder', 'sent')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4] .. queue, tonumber(ARGV[1]), ARGV[3])
redis.call('HINCRBY', KEYS[5], '$replayed', 1)
return {'replayed', queue}
"""

_SCRIPTS = {name: Template(text).safe_substitute(_NAMES) for name, text in (
    ("create", _CREATE), ("start", _START), ("finish", _FINISH), ("sweep", _SWEEP), ("give_back", _GIVE_BACK),
    ("publish", _PUBLISH), ("watch", _WATCH), ("replay", _REPLAY))}


class JobStore:
    """Job records: the source of truth for every accepted job. Queue messages carry only job ids: a lost
    message is re-sent by ``sweep`` from the record.

    ``lease_seconds``: how long a worker process's lease lasts without renewal; ``requeue_seconds``: how
    long a queued job may wait before the sweeper looks at it (the broker's visibility timeout, by default).
    ``clock`` gives the time in seconds (injected by tests).
    """

    def __init__(self, client: redis.Redis, prefix: str = "bc:", ttl_seconds: int = 86_400,
                 lease_seconds: float = 15, requeue_seconds: float = 30, clock: Clock = time.time) -> None:
        self.redis: Any = client  # redis-py's typing of replies is loose; replies are bytes here
        self.keys = Keys(prefix)
        self.ttl = ttl_seconds
        self.lease = lease_seconds
        self.requeue = requeue_seconds
        self.clock = clock
        self._shas: dict[str, str] = {}

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings, clock: Clock = time.time) -> JobStore:
        return cls(client, settings.key_prefix, settings.job_ttl_seconds, settings.lease_seconds,
                   settings.visibility_timeout_seconds, clock)

    # -- scripts -----------------------------------------------------------------------------------

    def _scripted(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """Run (script name, keys, args) calls in one pipelined round trip of EVALSHA (no SCRIPT EXISTS
        first); load the scripts when Redis does not know them (first use, or after a restart)."""
        for attempt in (1, 2):
            if not self._shas:
                self._shas = {name: self.redis.script_load(text) for name, text in _SCRIPTS.items()}
            try:
                if len(calls) == 1:  # no pipeline machinery for a lone call (the hot path's create)
                    name, keys, args = calls[0]
                    return [self.redis.evalsha(self._shas[name], len(keys), *keys, *args)]
                with self.redis.pipeline(transaction=False) as pipe:
                    for name, keys, args in calls:
                        pipe.evalsha(self._shas[name], len(keys), *keys, *args)
                    return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._shas = {}
        return []

    # -- gateway side ----------------------------------------------------------------------------

    def create(self, job_id: str, model: str, version: int, bundle_sha256: str,
               records: list[dict[str, Any]] | Payload, queue: str, alias: str | None = None,
               inbox: str | None = None, idempotency: tuple[str, str] | None = None,
               extra: dict[str, Any] | None = None, limit: int = 0) -> Created:
        """Write a new job of clean ``records`` (or their JSON, a ``Payload``); with ``inbox``, its id is
        pushed onto that list when it ends. With ``idempotency`` (key, digest of the request), a request
        seen before returns its job instead; the key used with another request is a ``Conflict``. A queue
        already holding ``limit`` unfinished jobs refuses it: ``TooManyRequests`` with a Retry-After from
        the queue's measured drain rate."""
        payload = records if isinstance(records, Payload) else Payload(orjson.dumps(records), len(records))
        now = self.clock()
        record: dict[str, Any] = {"id": job_id, "state": QUEUED, "model": model, "version": version,
                                  "bundle_sha256": bundle_sha256, "alias": alias or "", "count": payload.count,
                                  "queue": queue, "created": iso(now), "attempts": 0, **(extra or {})}
        stored = {**record, **({"inbox": inbox} if inbox else {})}
        keys = [self.keys.job(job_id), self.keys.jobs, self.keys.pending, self.keys.backlog(queue),
                self.keys.counters]
        key, digest = idempotency or ("", "")
        if idempotency is not None:
            keys.append(self.keys.idempotency(key))
        args: list[Any] = [now, self.ttl, job_id, now + self.requeue, digest, self.keys.job_prefix,
                           orjson.dumps({name: str(value) for name, value in stored.items()}), payload.json,
                           limit, f"submitted|{model}|{queue}"]
        outcome, found = (v.decode() for v in self._scripted([("create", keys, args)])[0])
        if outcome == "full":
            raise self.refusal(queue, int(found), limit)
        if outcome == "conflict":
            raise Conflict(f"Idempotency-Key {key.split(chr(0))[-1]!r} was already used with a different request "
                           f"(job {found})", field="Idempotency-Key")
        if outcome == "existing":
            return Created(found, False)
        if not alias:
            record.pop("alias")
        return Created(job_id, True, record)

    def publish(self, messages: list[tuple[str, list[str]]]) -> None:
        """Send score messages, each ``(queue, job ids)``, and mark their jobs sent: one round trip."""
        self._scripted([("publish", [self.keys.queue(queue), *map(self.keys.job, job_ids)],
                         [task_message(job_ids, queue)]) for queue, job_ids in messages])

    def depth(self, queue: str) -> int:
        """Jobs of ``queue`` not yet final (queued or running)."""
        return int(self.redis.zcard(self.keys.backlog(queue)))

    def drain_rate(self, queue: str, windows: int = 3) -> float:
        """Jobs of ``queue`` ended per second, measured over the last ``windows`` complete drain windows and
        the current one."""
        now = self.clock()
        current = int(now // DRAIN_BUCKET_SECONDS)
        counts = self.redis.mget([self.keys.drained(queue, b) for b in range(current - windows, current + 1)])
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

    def dead_jobs(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        """Dead jobs, most recent death first, as summaries (with their error); the offset of the next page."""
        ids = self.redis.zrevrange(self.keys.dead, offset, offset + limit - 1)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id.decode()), *SUMMARY_FIELDS, "replays")
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
        now = self.clock()
        reply = self._scripted([("replay", [self.keys.job(job_id), self.keys.pending, self.keys.dead,
                                             self.keys.backlog(""), self.keys.stats],
                                 [now, self.ttl, job_id, now + self.requeue])])[0]
        if reply is None:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        outcome = reply[0].decode()
        if outcome == "state":
            state = reply[1].decode()
            raise Conflict(f"job {job_id} is {state}; only dead jobs can be replayed", state=state, job=job_id)
        if outcome == "gone":
            raise Conflict(f"job {job_id} died without its records kept; it cannot be replayed", job=job_id)
        self.publish([(reply[1].decode(), [job_id])])
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.hgetall(self.keys.job(job_id)) if len(job_id) <= MAX_JOB_ID else {}
        if not raw:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        return decode(raw)

    def watch(self, job_id: str, inbox: str) -> dict[str, Any] | None:
        """The job if it is final; otherwise None, and ``inbox`` gets it when it ends (see ``Inbox``). Waiting
        this way holds no Redis connection, however many requests wait."""
        if len(job_id) > MAX_JOB_ID:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        reply = self._scripted([("watch", [self.keys.job(job_id)], [inbox])])[0]
        if reply is None:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        if not reply:
            return None
        return decode(dict(zip(reply[::2], reply[1::2], strict=True)))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job; a job that is running or final is a ``Conflict`` naming its state."""
        self.get(job_id)
        done, state, _ = self._end([(job_id, CANCELLED, {})], allowed=QUEUED)[0]
        if not done:
            raise Conflict(f"job {job_id} is {state}; only queued jobs can be cancelled", state=state, job=job_id)
        return self.get(job_id)

    def recent(self, state: str | None = None, model: str | None = None, offset: int = 0,
               limit: int = 50, owner: str | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Jobs newest first, filtered; returns a page and the offset of the next page (None at the end).
        Reads only each job's summary fields, never its records or results."""
        found: list[dict[str, Any]] = []
        position = offset
        chunk = max(limit * 4, 100)
        while len(found) < limit:
            ids = self.redis.zrevrange(self.keys.jobs, position, position + chunk - 1)
            if not ids:
                return found, None
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.keys.job(job_id.decode()), *SUMMARY_FIELDS)
                rows = pipe.execute()
            for index, values in enumerate(rows):
                if values[0] is None:
                    continue
                job = decode({k.encode(): v for k, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None})
                if (state and job["state"] != state) or (model and job["model"] != model):
                    continue
                if owner is not None and job.get("owner") != owner:
                    continue
                found.append(job)
                if len(found) == limit:
                    return found, position + index + 1
            position += len(ids)
        return found, position

    # -- worker side -----------------------------------------------------------------------------

    def renew(self, holder: str) -> None:
        """Extend ``holder``'s lease (its heartbeat): every job it holds stays its own."""
        self.redis.zadd(self.keys.holders, {holder: self.clock() + self.lease})

    def give_back(self, job_ids: list[str], holder: str) -> None:
        """Return jobs ``holder`` started but cannot finish to the queue; the sweeper sends them again."""
        now = self.clock()
        self._scripted([("give_back", [self.keys.job(job_id), self.keys.pending], [holder, now, job_id])
                        for job_id in job_ids])

    def start(self, job_ids: list[str], holder: str, max_attempts: int | None = None) -> list[Start]:
        """Start a delivery of each job for ``holder`` (one round trip for all of them). A job delivered
        more than ``max_attempts`` times (each earlier delivery lost its worker) ends ``dead`` instead."""
        now = self.clock()
        keys = [self.keys.pending, self.keys.holders, self.keys.stats]
        replies = self._scripted([("start", [self.keys.job(job_id), *keys], [now, iso(now), self.lease, job_id,
                                                                             holder]) for job_id in job_ids])
        starts, dead = [], []
        for job_id, reply in zip(job_ids, replies, strict=True):
            state = reply[0].decode() if isinstance(reply[0], bytes) else None
            attempts = int(reply[1] or 0)
            if state != RUNNING:
                starts.append(Start(state, attempts))
            elif max_attempts is not None and attempts > max_attempts:
                reason = (f"delivered {attempts - 1} times and the worker was lost each time (limit "
                          f"{max_attempts}); the job is dead and will not be retried")
                dead.append((job_id, DEAD, {"error": {"code": "dead", "detail": reason, "attempts": attempts - 1}}))
                starts.append(Start(DEAD, attempts))
            else:
                created = reply[6].decode() if len(reply) > 6 and reply[6] else None
                starts.append(Start(state, attempts, reply[2].decode(), int(reply[3]), orjson.loads(reply[4] or b"[]"),
                                    reply[5].decode() or None, parse_iso(created) if created else None,
                                    reply[7].decode() if len(reply) > 7 else ""))
        if dead:
            self.end(dead)
            self.redis.hincrby(self.keys.stats, STAT_DEAD, len(dead))
        return starts

    def end(self, outcomes: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Record each ``(job_id, state, fields)`` of a running job unless it is final already; wake its
        waiters. Returns, per job, whether this outcome was the one recorded. A batch whose last chunk this
        was is sent for its merge delivery (the sweeper sends it if this process cannot)."""
        ended = self._end(outcomes, allowed=f"{QUEUED},{RUNNING}")
        merges = [batch for _, _, batch in ended if batch]
        if merges:
            self.publish([(QUEUE_BULK, merges)])
        return [done for done, _, _ in ended]

    def _end(self, outcomes: list[tuple[str, str, dict[str, Any]]],
             allowed: str) -> list[tuple[bool, str | None, str | None]]:
        calls = []
        now = self.clock()
        for job_id, state, fields in outcomes:
            args: list[Any] = [allowed, self.ttl, job_id, now + self.requeue, self.keys.backlog(""),
                               self.keys.drained("", int(now // DRAIN_BUCKET_SECONDS)), now,
                               "state", state, "finished", iso(now)]
            for key, value in fields.items():
                args += [key, value if isinstance(value, str) else orjson.dumps(value)]
            keys = [self.keys.job(job_id), self.keys.pending, self.keys.stats, self.keys.counters, self.keys.dead]
            parent = parent_of(job_id)
            if parent is not None:
                keys.append(self.keys.job(parent))
            calls.append(("finish", keys, args))
        return [(bool(reply[0]), reply[1].decode() if reply[1] else None,
                 reply[2].decode() if len(reply) > 2 and reply[2] else None) for reply in self._scripted(calls)]

    def sweep(self, resend: Callable[[dict[str, list[str]]], None], limit: int = 1000) -> int:
        """Send again every job that needs it: a running job whose holder's lease ran out, a queued job whose
        queue has no backlog left. ``resend({queue: [job ids]})`` publishes the messages. One sweeper at a
        time across all workers; returns how many jobs were sent."""
        if not self.redis.set(self.keys.sweeper, "1", nx=True, ex=60):
            return 0
        try:
            now = self.clock()
            flat = self._scripted([("sweep", [self.keys.pending, self.keys.holders, self.keys.stats],
                                    [now, self.lease, self.requeue, self.keys.job_prefix, self.keys.queue(""),
                                     limit, "1" if self.restarted() else "0"])])[0]
            by_queue: dict[str, list[str]] = {}
            for index in range(0, len(flat), 2):
                by_queue.setdefault(flat[index + 1].decode() or QUEUE_RECORDS, []).append(flat[index].decode())
            if by_queue:
                resend(by_queue)
            return sum(map(len, by_queue.values()))
        finally:
            self.redis.delete(self.keys.sweeper)

    def restarted(self) -> bool:
        """Whether Redis restarted since the last sweep (its run id changed; the last one seen is kept in
        Redis, so any sweeper notices, once)."""
        try:
            run_id = str(self.redis.info("server").get("run_id", ""))
        except redis.RedisError:  # INFO not allowed here: rely on the ordinary checks
            return False
        previous = self.redis.getset(self.keys.redis_run, run_id)
        return previous is not None and previous.decode() != run_id

    def tidy(self, forget_after: float = 3_600) -> None:
        """Drop expired jobs from the listing index, and workers gone longer than ``forget_after`` seconds."""
        now = self.clock()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.jobs, "-inf", now - self.ttl)
            pipe.zremrangebyscore(self.keys.dead, "-inf", now - self.ttl)
            for queue in QUEUES:  # a job whose record expired before it ended leaves the depth count too
                pipe.zremrangebyscore(self.keys.backlog(queue), "-inf", now - self.ttl)
            pipe.zremrangebyscore(self.keys.holders, "-inf", now - forget_after)
            for queue in QUEUES:
                pipe.zremrangebyscore(self.keys.workers(queue), "-inf", now - forget_after)
            pipe.execute()

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}


class RawJSON(str):
    """JSON text kept as it was stored (a job's results): answers embed it without parsing it again."""

    def parse(self) -> Any:
        return json.loads(self)


def decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return decode_text({k.decode(): v.decode() for k, v in raw.items()})


def decode_final(entry: str) -> dict[str, Any]:
    """A final job as the finish script hands it to an inbox: ``<id> <JSON of its fields>\n<results>``."""
    fields, _, results = entry.split(" ", 1)[1].partition("\n")
    return decode_text({**orjson.loads(fields), **({"results": results} if results else {})})


def progress(started: str | None, finished: str | None, job: dict[str, Any],
             now: float | None = None) -> dict[str, Any]:
    """A batch's rows per second since its scoring began and the seconds left at that rate (None until
    there is a rate to go by)."""
    done, total = job.get("rows_done", 0), job.get("rows_total", 0)
    end = float(finished) if finished else (time.time() if now is None else now)
    elapsed = end - float(started) if started else 0.0
    rate = done / elapsed if done and elapsed > 0 else None
    if job.get("state") == SUCCEEDED:
        eta: float | None = 0.0
    elif job.get("state") in (QUEUED, RUNNING) and rate:
        eta = (total - done) / rate
    else:
        eta = None
    return {"rows_per_second": round(rate, 1) if rate else None,
            "eta_seconds": round(eta, 1) if eta is not None else None}


def decode_text(fields: dict[str, str]) -> dict[str, Any]:
    """A job for clients from its stored fields: numbers as numbers, internal fields dropped, its results
    as ``RawJSON``."""
    job: dict[str, Any] = dict(fields)
    for key in ("version", "count", "attempts", "replays", *BATCH_COUNTS):
        if key in job:
            job[key] = int(job[key])
    for internal in ("payload", "holder", "inbox", "sent", *BATCH_INTERNAL):
        job.pop(internal, None)
    if "webhook" in job:
        job["webhook"] = json.loads(job["webhook"])
    if job.get("kind") == KIND_BATCH:
        job.update(progress(job.pop("scoring_started", None), job.pop("scoring_finished", None), job))
        for name in BATCH_COUNTS:  # one shape from submission on: totals are null until the file is planned
            job.setdefault(name, None if name in ("rows_total", "chunks_total") else 0)
    if not job.get("alias"):
        job.pop("alias", None)
    results = job.pop("results", None)
    if results is not None:
        job["results"] = RawJSON(results)
    if "error" in job:
        job["error"] = json.loads(job["error"])
    return job
