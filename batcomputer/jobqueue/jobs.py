"""Job records in Redis shared by gateway and workers: atomic creation, leased deliveries, finish-once.

The lifecycle (each step one Lua script in ``scripts/``, run through ``lua.Scripts``):

* ``create`` (gateway): claims the Idempotency-Key and writes the job in one script, so a concurrent retry
  with the same key always finds a job, and a failed create leaves no key behind; a full queue refuses it
  (``admission``).
* ``start`` (worker): takes the job for one delivery. A job already final, or held by another worker whose
  lease is alive, is left alone (a duplicate delivery); a queued job, or one whose holder's lease ran out, is
  taken, and the delivery counted in ``attempts``.
* Leases belong to worker processes, not jobs (``leases``): each process renews its own from a heartbeat
  thread, so a long job is never cut short while its worker lives, and the cost does not grow with its jobs.
* ``end`` (worker, or ``cancel``): writes the outcome once, only from the states the caller expects; a late
  duplicate never overwrites a result, and is counted (``rescored``) if the model ran for it anyway.
* ``publish`` (gateway and sweeper): the message goes to the queue and its jobs are marked sent, in one step.
* ``sweeps``: send again what a lost worker or a lost message left behind; ``dead``: list and replay jobs
  that ran out of deliveries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from batcomputer.errors import Conflict, NotFound
from batcomputer.jobqueue.admission import NO_SHARE, Admission, Share
from batcomputer.jobqueue.broker import task_message
from batcomputer.jobqueue.dead import DeadJobs
from batcomputer.jobqueue.keyspace import (
    CANCELLED,
    DEAD,
    DRAIN_BUCKET_SECONDS,
    QUEUE_BULK,
    QUEUED,
    RUNNING,
    STAT_DEAD,
    Keys,
    parent_of,
)
from batcomputer.jobqueue.leases import Leases
from batcomputer.jobqueue.lua import Scripts
from batcomputer.jobqueue.records import (
    MAX_JOB_ID,
    SUMMARY_FIELDS,
    Created,
    Payload,
    Start,
    decode,
    iso,
    parse_iso,
)
from batcomputer.jobqueue.sweeps import Sweeper
from batcomputer.settings import Settings

Clock = Callable[[], float]
Outcome = tuple[str, str, dict[str, Any]]  # job id, final state, fields


class JobStore:
    """Job records: the source of truth for every accepted job. Queue messages carry only job ids: a lost
    message is re-sent by the sweeper from the record.

    ``lease_seconds``: how long a worker process's lease lasts without renewal; ``requeue_seconds``: how
    long a queued job may wait before the sweeper looks at it (the broker's visibility timeout, by default).
    ``clock`` gives the time in seconds (injected by tests). Its parts: ``admission`` (queue depth and
    refusals), ``leases`` (worker processes' heartbeats), ``sweeper``, ``dead`` (dead jobs and replays).
    """

    def __init__(self, client: redis.Redis, prefix: str = "bc:", ttl_seconds: int = 86_400,
                 lease_seconds: float = 15, requeue_seconds: float = 30, clock: Clock = time.time) -> None:
        self.redis: Any = client  # redis-py's typing of replies is loose; replies are bytes here
        self.keys = Keys(prefix)
        self.ttl = ttl_seconds
        self.lease = lease_seconds
        self.requeue = requeue_seconds
        self.clock = clock
        self.scripts = Scripts(client)
        self.admission = Admission(self)
        self.leases = Leases(self)
        self.sweeper = Sweeper(self)
        self.dead = DeadJobs(self)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings, clock: Clock = time.time) -> JobStore:
        return cls(client, settings.key_prefix, settings.job_ttl_seconds, settings.lease_seconds,
                   settings.visibility_timeout_seconds, clock)

    # -- gateway side ----------------------------------------------------------------------------

    def create(self, job_id: str, model: str, version: int, bundle_sha256: str,
               records: list[dict[str, Any]] | Payload, queue: str, alias: str | None = None,
               inbox: str | None = None, idempotency: tuple[str, str] | None = None,
               extra: dict[str, Any] | None = None, limit: int = 0, lane: str | None = None,
               share: Share = NO_SHARE) -> Created:
        """Write a new job of clean ``records`` (or their JSON, a ``Payload``); with ``inbox``, its id is
        pushed onto that list when it ends. With ``idempotency`` (key, digest of the request), a request
        seen before returns its job instead; the key used with another request is a ``Conflict``. A queue
        already holding ``limit`` unfinished jobs refuses it: ``TooManyRequests`` with a Retry-After from
        the queue's measured drain rate. A job of a key (``extra["owner"]``) goes on the key's ``lane`` of the
        queue, and ``share`` bounds what one key may hold of the queue and what it may always hold."""
        payload = records if isinstance(records, Payload) else Payload(orjson.dumps(records), len(records))
        now = self.clock()
        owner = str((extra or {}).get("owner") or "")
        record: dict[str, Any] = {"id": job_id, "state": QUEUED, "model": model, "version": version,
                                  "bundle_sha256": bundle_sha256, "alias": alias or "", "count": payload.count,
                                  "queue": queue, "created": iso(now), "attempts": 0, **(extra or {})}
        stored = {**record, **({"inbox": inbox} if inbox else {}), **({"lane": lane} if lane and lane != queue else {})}
        keys = [self.keys.job(job_id), self.keys.jobs, self.keys.pending, self.keys.backlog(queue),
                self.keys.counters, self.keys.share(queue, owner)]
        key, digest = idempotency or ("", "")
        if idempotency is not None:
            keys.append(self.keys.idempotency(key))
        most, reserve = share if owner else NO_SHARE
        args: list[Any] = [now, self.ttl, job_id, now + self.requeue, digest, self.keys.job_prefix,
                           orjson.dumps({name: str(value) for name, value in stored.items()}), payload.json,
                           limit, f"submitted|{model}|{queue}", most, reserve]
        outcome, found = (v.decode() for v in self.scripts.run([("create", keys, args)])[0])
        if outcome == "full":
            raise self.admission.refusal(queue, int(found), limit)
        if outcome == "share":
            raise self.admission.refusal_of_key(queue, int(found), most)
        if outcome == "conflict":
            raise Conflict(f"Idempotency-Key {key.split(chr(0))[-1]!r} was already used with a different request "
                           f"(job {found})", field="Idempotency-Key")
        if outcome == "existing":
            return Created(found, False)
        if not alias:
            record.pop("alias")
        return Created(job_id, True, record)

    def publish(self, messages: list[tuple[str, list[str]]]) -> None:
        """Send score messages, each ``(lane, job ids)`` (a queue's name is its lane 0), and mark their jobs
        sent: one round trip."""
        now = self.clock()
        self.scripts.run([("publish", [self.keys.queue(lane), *map(self.keys.job, job_ids)],
                         [task_message(job_ids, lane), now]) for lane, job_ids in messages])

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
        reply = self.scripts.run([("watch", [self.keys.job(job_id)], [inbox])])[0]
        if reply is None:
            raise NotFound(f"job {job_id!r} does not exist or has expired", job=job_id)
        if not reply:
            return None
        return decode(dict(zip(reply[::2], reply[1::2], strict=True)))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job; a job that is running or final is a ``Conflict`` naming its state."""
        self.get(job_id)
        done, state, _ = self.settle([(job_id, CANCELLED, {})], allowed=QUEUED)[0]
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

    def give_back(self, job_ids: list[str], holder: str) -> None:
        """Return jobs ``holder`` started but cannot finish to the queue; the sweeper sends them again."""
        now = self.clock()
        self.scripts.run([("give_back", [self.keys.job(job_id), self.keys.pending], [holder, now, job_id])
                        for job_id in job_ids])

    def start(self, job_ids: list[str], holder: str, max_attempts: int | None = None) -> list[Start]:
        """Start a delivery of each job for ``holder`` (one round trip for all of them). A job delivered
        more than ``max_attempts`` times (each earlier delivery lost its worker) ends ``dead`` instead."""
        now = self.clock()
        keys = [self.keys.pending, self.keys.holders, self.keys.stats, self.keys.progress]
        replies = self.scripts.run([("start", [self.keys.job(job_id), *keys], [now, iso(now), self.lease, job_id,
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
                                    reply[7].decode() if len(reply) > 7 else "",
                                    reply[8].decode() if len(reply) > 8 else "",
                                    reply[9].decode() if len(reply) > 9 else "job",
                                    float(reply[10]) if len(reply) > 10 and reply[10] else None,
                                    len(reply) > 11 and reply[11] == b"1",
                                    orjson.loads(reply[12]) if len(reply) > 12 and reply[12] else None))
        if dead:
            self.end(dead)
            self.redis.hincrby(self.keys.stats, STAT_DEAD, len(dead))
        return starts

    def end(self, outcomes: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Record each ``(job_id, state, fields)`` of a running job unless it is final already; wake its
        waiters. Returns, per job, whether this outcome was the one recorded. A batch whose last chunk this
        was is sent for its merge delivery (the sweeper sends it if this process cannot)."""
        ended = self.settle(outcomes, allowed=f"{QUEUED},{RUNNING}")
        merges = [batch for _, _, batch in ended if batch]
        if merges:  # each on its batch's lane
            with self.redis.pipeline(transaction=False) as pipe:
                for batch in merges:
                    pipe.hget(self.keys.job(batch), "lane")
                found = pipe.execute()
            by_lane: dict[str, list[str]] = {}
            for batch, lane in zip(merges, found, strict=True):
                by_lane.setdefault(lane.decode() if lane else QUEUE_BULK, []).append(batch)
            self.publish(list(by_lane.items()))
        return [done for done, _, _ in ended]

    def settle(self, outcomes: list[Outcome], allowed: str) -> list[tuple[bool, str | None, str | None]]:
        """Record each outcome of a job whose state is one of ``allowed`` (comma-separated); per job: whether
        it was recorded, the state it was in, and the batch it completed (whose merge is now due), if any."""
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
                 reply[2].decode() if len(reply) > 2 and reply[2] else None) for reply in self.scripts.run(calls)]

    def fields(self, job_id: str, *names: str) -> list[str | None]:
        """Some stored fields of a job as text (None where absent, or for a job that does not exist)."""
        return [value.decode() if value is not None else None
                for value in self.redis.hmget(self.keys.job(job_id), *names)]

    def stats(self) -> dict[str, int]:
        """The protocol's own counts: duplicates, rescored, resent, dead, replayed."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}

    def counters(self) -> dict[tuple[str, str, str], int]:
        """Jobs submitted per (``submitted``, model, queue) and ended per (``ended``, model, state)."""
        found = {}
        for raw_field, raw_value in self.redis.hgetall(self.keys.counters).items():
            kind, _, rest = raw_field.decode().partition("|")
            model, _, other = rest.partition("|")
            found[(kind, model, other)] = int(raw_value)
        return found


