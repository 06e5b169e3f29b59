"""Every name shared across processes: task and queue names, job states, the default alias, and Redis keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

TASK_SCORE = "batcomputer.score"
QUEUE_RECORDS = "records"  # interactive: small jobs, scored in micro-batches
QUEUE_BULK = "bulk"        # large record lists (and later files): never in the way of interactive work
QUEUES = (QUEUE_RECORDS, QUEUE_BULK)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, DEAD = "queued", "running", "succeeded", "failed", "cancelled", "dead"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, DEAD)
FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DEAD})
BUSY = "busy"  # not a state: what a delivery learns when another live worker holds the job

# Lanes: each queue is LANES broker lists, and a worker takes from them in turn (kombu's Redis transport
# rotates the lists it waits on after every delivery), so one key's flood of messages never stands between
# another key's message and the next free worker. Lane 0 is the queue's own name (work without a key: the
# local profile); each key has its own lane among the others (``batcomputer.apikeys`` assigns it).
LANES = 8


def lane(queue: str, index: int) -> str:
    """The broker list of ``queue``'s lane ``index`` (``records``, ``records.1``, ... ``records.7``)."""
    return queue if index % LANES == 0 else f"{queue}.{index % LANES}"


def lane_for(queue: str, ordinal: int) -> str:
    """The lane of ``queue`` a key takes: keys numbered 1, 2, ... in creation order take lanes 1 to 7 in turn;
    0 (no key) takes lane 0."""
    return queue if ordinal <= 0 else lane(queue, 1 + (ordinal - 1) % (LANES - 1))


def lanes(queue: str) -> list[str]:
    """Every lane of ``queue``: what its workers consume."""
    return [lane(queue, index) for index in range(LANES)]


def queue_of(lane_name: str) -> str:
    """The queue a lane belongs to."""
    return lane_name.partition(".")[0]


DEFAULT_ALIAS = "production"
STREAM_GROUP = "batcomputer"  # the consumer group every stream consumer reads in

# Kinds of job (the ``kind`` field; a job without one is a list of records) and the phases of a batch file.
KIND_BATCH = "batch"   # a Parquet file: planned into chunks, scored by any bulk worker, merged into one output
KIND_CHUNK = "chunk"   # rows of a batch file; its id is ``<batch id>.<index>``
PHASE_PLAN, PHASE_SCORE, PHASE_MERGE = "plan", "score", "merge"
CHUNK_SEPARATOR = "."


def chunk_id(batch_id: str, index: int) -> str:
    return f"{batch_id}{CHUNK_SEPARATOR}{index}"


def parent_of(job_id: str) -> str | None:
    """The batch a chunk belongs to (None for any other job)."""
    parent, separator, _ = job_id.partition(CHUNK_SEPARATOR)
    return parent if separator else None

# Counters in the stats hash (what the job lifecycle did, for operators and the chaos tests).
STAT_RESENT = "resent"          # messages the sweeper sent again for a job whose message or worker was lost
STAT_DUPLICATES = "duplicates"  # deliveries skipped because the job was final or held by a live worker
STAT_RESCORED = "rescored"      # results that arrived for a job already final: the model ran twice (should be 0)
STAT_DEAD = "dead"              # jobs that lost their worker too often
STAT_REPLAYED = "replayed"      # dead jobs an operator sent again
DRAIN_BUCKET_SECONDS = 10       # the width of one window of the drain-rate counters


@dataclass(frozen=True)
class Keys:
    """The Redis key of everything Batcomputer writes, under one prefix (``BATCOMPUTER_KEY_PREFIX``)."""

    prefix: str = "bc:"

    def job(self, job_id: str) -> str:
        """Hash: the job record (state, pin, attempts, holder, payload until final, then results)."""
        return f"{self.prefix}job:{job_id}"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}job:"

    @property
    def jobs(self) -> str:
        """Sorted set: every job id by creation time (the listing index)."""
        return f"{self.prefix}jobs"

    @property
    def pending(self) -> str:
        """Sorted set: every unfinished job id by the time the sweeper should look at it next."""
        return f"{self.prefix}pending"

    @property
    def holders(self) -> str:
        """Sorted set: worker processes that hold jobs, by the time their lease runs out."""
        return f"{self.prefix}holders"

    def workers(self, queue: str) -> str:
        """Sorted set: worker processes consuming ``queue``, by their last heartbeat (for /readyz)."""
        return f"{self.prefix}workers:{queue}"

    def idempotency(self, key: str) -> str:
        """String: ``<job id> <body digest>`` for a client's Idempotency-Key (hashed: any length, any bytes)."""
        return f"{self.prefix}idempotency:{hashlib.sha256(key.encode()).hexdigest()}"

    def inbox(self, name: str) -> str:
        """List: ``<job id> <final job as JSON>`` entries for one gateway process's waiting requests."""
        return f"{self.prefix}inbox:{name}"

    def stream(self, model: str, role: str) -> str:
        """Stream ``in`` (records to score), ``out`` (outputs), ``dead`` (dead letters) of a model; and
        ``stats``, a hash of its counters and its consumers' rates."""
        return f"{self.prefix}stream:{model}:{role}"

    @property
    def files(self) -> str:
        """Sorted set: batch files (uploads, outputs Batcomputer named, part folders) by when to delete them."""
        return f"{self.prefix}files"

    @property
    def writers(self) -> str:
        """Hash: the URL of every output a batch of a key wrote (or is writing) -> that key's name."""
        return f"{self.prefix}writers"

    @property
    def webhooks(self) -> str:
        """Sorted set: batch job ids whose webhook is due, by the time of the next delivery attempt."""
        return f"{self.prefix}webhooks"

    @property
    def redis_run(self) -> str:
        """String: the run id of the Redis the last sweep saw (a change means Redis restarted)."""
        return f"{self.prefix}redis-run"

    def outcomes(self, model: str) -> str:
        """Hash: ``<job id>|<index>`` -> the label that really happened (``batcomputer.monitoring.outcomes``)."""
        return f"{self.prefix}outcomes:{model}"

    @property
    def capture_health(self) -> str:
        """Hash: per capturing process whose last write failed, what it dropped (``batcomputer.monitoring.store``)."""
        return f"{self.prefix}capture:health"

    def outcome_keys(self, model: str, owner: str) -> str:
        """Hash: a client's key of a captured record of the API key ``owner`` ('' without keys) -> ``<job or
        entry id>|<index>`` (written by the capture; ``batcomputer.monitoring.outcomes``)."""
        return f"{self.prefix}outcome-keys:{model}:{owner or '-'}"

    def guard(self, model: str) -> str:
        """String: the watch window of ``model``'s latest production move (JSON; ``batcomputer.models.guard``)."""
        return f"{self.prefix}guard:{model}"

    def canary(self, model: str) -> str:
        """String: the version that takes a share of ``model``'s unpinned traffic, the share, its steps, who set
        it and when (JSON; ``batcomputer.models.rollout``)."""
        return f"{self.prefix}canary:{model}"

    def monitoring(self, model: str) -> str:
        """String: the latest monitor result of ``model`` (JSON; ``batcomputer.monitoring.store``)."""
        return f"{self.prefix}monitoring:{model}"

    def monitoring_history(self, model: str) -> str:
        """List: the latest monitor results of ``model`` in brief, newest first (``batcomputer.monitoring.store``)."""
        return f"{self.prefix}monitoring-history:{model}"

    @property
    def progress(self) -> str:
        """Hash: per lane, the latest time a job taken from it had been sent (lanes are first in, first out: a
        queued job sent before that lost its message)."""
        return f"{self.prefix}progress"

    @property
    def sweeper(self) -> str:
        """String: the lock that lets one sweeper at a time run across all workers."""
        return f"{self.prefix}sweeper"

    def backlog(self, queue: str) -> str:
        """Sorted set: the jobs of ``queue`` not yet final (queued or running), by creation time: the depth
        admission control limits."""
        return f"{self.prefix}backlog:{queue}"

    def share(self, queue: str, owner: str) -> str:
        """Sorted set: the jobs of ``queue`` not yet final that belong to the key ``owner``: the part of the
        depth one key may hold (``BATCOMPUTER_KEY_SHARE``)."""
        return f"{self.prefix}backlog:{queue}:{owner}"

    def drained(self, queue: str, bucket: int) -> str:
        """String: jobs of ``queue`` that ended in one ``DRAIN_BUCKET_SECONDS`` window (kept two minutes):
        the measured drain rate behind a 429's Retry-After."""
        return f"{self.prefix}drained:{bucket}:{queue}"

    @property
    def dead(self) -> str:
        """Sorted set: dead jobs (their records kept for a replay) by the time they died."""
        return f"{self.prefix}dead"

    @property
    def counters(self) -> str:
        """Hash: cluster-wide counters for /metrics, ``submitted|<model>|<queue>`` and
        ``ended|<model>|<state>``."""
        return f"{self.prefix}counters"

    def metrics(self, node: str = "") -> str:
        """Hash: metrics every process adds to (see ``batcomputer.metrics``): the cluster's, or with ``node``
        one worker's own (expires an hour after its last flush)."""
        return f"{self.prefix}metrics:{node}" if node else f"{self.prefix}metrics"

    @property
    def stats(self) -> str:
        """Hash: lifecycle counters (``STAT_*``)."""
        return f"{self.prefix}stats"

    def queue(self, queue: str) -> str:
        """List: the broker's queue (kombu's Redis transport prefixes its keys with the same global prefix)."""
        return f"{self.prefix}{queue}"
