"""The job store against a real Redis with an injected clock: leases, sweeping, duplicates, dead jobs, cancel."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from batcomputer.errors import Conflict, TooManyRequests
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import BUSY, CANCELLED, DEAD, QUEUE_RECORDS, QUEUED, RUNNING, SUCCEEDED
from batcomputer.jobqueue.records import new_job_id
from tests.conftest import remove_keys

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_base_url: str, clock: Clock) -> Iterator[JobStore]:
    prefix = f"bct-{uuid.uuid4().hex[:10]}:"
    yield JobStore(redis.Redis.from_url(redis_base_url), prefix, ttl_seconds=3_600, lease_seconds=15,
                   requeue_seconds=30, clock=clock)
    remove_keys(redis_base_url, prefix)


def create(store: JobStore, records: int = 1) -> str:
    job_id = new_job_id()
    store.create(job_id, "titanic", 1, "sha", [RECORD] * records, QUEUE_RECORDS)
    return job_id


def sent(store: JobStore, job_id: str) -> None:
    """The job's message went to the broker (and was then taken by a worker that died with it)."""
    store.publish([(QUEUE_RECORDS, [job_id])])
    store.redis.delete(store.keys.queue(QUEUE_RECORDS))


def swept(store: JobStore) -> list[str]:
    sent: list[str] = []
    store.sweeper.sweep(lambda by_queue: sent.extend(i for ids in by_queue.values() for i in ids))
    return sent


def test_a_start_takes_the_job_and_a_second_delivery_is_a_duplicate(store: JobStore) -> None:
    job_id = create(store)
    store.leases.renew("a")
    [first] = store.start([job_id], "a")
    assert (first.state, first.attempts, first.model, first.version, first.records) == (RUNNING, 1, "titanic", 1,
                                                                                       [RECORD])
    store.leases.renew("b")
    [again] = store.start([job_id], "b")
    assert again.state == BUSY and store.get(job_id)["attempts"] == 1
    assert store.stats()["duplicates"] == 1


def test_a_live_worker_keeps_its_job_however_long_it_runs(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    store.leases.renew("a")
    store.start([job_id], "a")
    for _ in range(20):  # ten minutes of work, the heartbeat renewing every 5 s
        clock.advance(5)
        store.leases.renew("a")
        assert swept(store) == []
    store.leases.renew("b")
    assert store.start([job_id], "b")[0].state == BUSY
    assert store.get(job_id)["state"] == RUNNING


def test_a_lost_worker_s_job_is_sent_again_once_its_lease_runs_out(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    store.leases.renew("a")
    store.start([job_id], "a")
    clock.advance(14)
    assert swept(store) == []  # the lease still runs: the sweeper does nothing
    clock.advance(2)  # 16 s without a heartbeat: the holder is gone
    assert swept(store) == [job_id]
    assert store.get(job_id)["state"] == QUEUED  # waiting for a worker again
    assert swept(store) == []  # not sent twice
    store.leases.renew("b")
    [taken] = store.start([job_id], "b")
    assert (taken.state, taken.attempts) == (RUNNING, 2)
    assert store.end([(job_id, SUCCEEDED, {"results": [{"p": 0.5}]})]) == [True]
    assert store.stats()["resent"] == 1


def test_a_queued_job_whose_message_never_left_is_sent_by_the_sweeper(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    clock.advance(29)
    assert swept(store) == []  # the publisher may still be sending it
    clock.advance(2)
    store.redis.rpush(store.keys.queue(QUEUE_RECORDS), "another message")
    assert swept(store) == [job_id]  # never sent: a backlog does not matter


def test_a_sent_queued_job_is_sent_again_only_when_its_queue_has_no_backlog(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    sent(store, job_id)
    clock.advance(31)
    backlog = store.keys.queue(QUEUE_RECORDS)
    store.redis.rpush(backlog, "another message")
    assert swept(store) == []  # a backlog: its message is most likely in it
    store.redis.delete(backlog)
    clock.advance(31)
    assert swept(store) == [job_id]  # no backlog and still queued: its message sits with a dead worker or is lost


def test_a_sent_job_behind_a_queue_that_never_empties_is_sent_again_within_seven_periods(
        store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    sent(store, job_id)
    store.redis.rpush(store.keys.queue(QUEUE_RECORDS), "another message")  # the queue stays busy throughout
    resent_at = None
    for second in range(1, 400):
        clock.advance(1)
        if swept(store):
            resent_at = second
            break
    assert resent_at == 7 * 30  # postponed 30, 60 and 90 s after the first check: its message may be lost


def test_a_job_whose_message_a_later_one_overtook_is_sent_again_at_its_first_check_behind_a_backlog(
        store: JobStore, clock: Clock) -> None:
    lost = create(store)
    sent(store, lost)  # its message vanished (taken by a worker that died before recording it, say)
    clock.advance(1)
    later = create(store)
    store.publish([(QUEUE_RECORDS, [later])])  # sent after it, on the same lane: stays in the busy queue
    store.redis.rpush(store.keys.queue(QUEUE_RECORDS), "another message")
    clock.advance(31)
    assert swept(store) == []  # a backlog, and nothing overtaken yet: both checks are postponed (by 60 s)
    store.leases.renew("a")
    store.start([later], "a")  # a worker takes the later job: the lost one's message is not in the queue
    clock.advance(61)
    store.leases.renew("a")  # its worker lives on
    assert swept(store) == [lost]  # at its next check, however busy the queue (not after 3.5 min)


def test_a_job_given_back_is_sent_again_at_once_even_behind_a_backlog(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    sent(store, job_id)
    store.leases.renew("a")
    store.start([job_id], "a")
    store.redis.rpush(store.keys.queue(QUEUE_RECORDS), "another message")
    store.give_back([job_id], "a")  # the failed delivery's message is gone: nothing else would bring it back
    assert store.get(job_id)["state"] == QUEUED
    assert swept(store) == [job_id]


def test_marking_an_expired_job_sent_does_not_bring_it_back(store: JobStore) -> None:
    job_id = create(store)
    store.redis.delete(store.keys.job(job_id))
    sent(store, job_id)
    assert store.redis.exists(store.keys.job(job_id)) == 0


def test_a_finished_job_is_finished_once_and_a_late_delivery_never_scores_it(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    store.leases.renew("a")
    store.start([job_id], "a")
    assert store.end([(job_id, SUCCEEDED, {"results": [{"p": 0.25}]})]) == [True]
    assert store.end([(job_id, SUCCEEDED, {"results": [{"p": 0.75}]})]) == [False]
    assert store.get(job_id)["results"].parse() == [{"p": 0.25}]
    assert store.stats()["rescored"] == 1  # counted: the model had run twice
    clock.advance(100)
    store.leases.renew("b")
    assert store.start([job_id], "b")[0].state == SUCCEEDED  # a late duplicate: nothing to score
    assert swept(store) == []


def test_a_job_that_loses_its_worker_too_often_ends_dead(store: JobStore, clock: Clock) -> None:
    job_id = create(store)
    for attempt in (1, 2, 3):
        holder = f"w{attempt}"
        store.leases.renew(holder)
        assert store.start([job_id], holder, max_attempts=3)[0].attempts == attempt
        clock.advance(16)  # the worker dies with it
        assert swept(store) == [job_id]
    store.leases.renew("w4")
    assert store.start([job_id], "w4", max_attempts=3)[0].state == DEAD
    job = store.get(job_id)
    assert job["state"] == DEAD and job["error"]["code"] == "dead" and job["error"]["attempts"] == 3
    assert "worker was lost" in job["error"]["detail"]


def test_only_a_queued_job_can_be_cancelled(store: JobStore) -> None:
    queued = create(store)
    assert store.cancel(queued)["state"] == CANCELLED
    store.leases.renew("a")
    assert store.start([queued], "a")[0].state == CANCELLED
    running = create(store)
    store.start([running], "a")
    with pytest.raises(Conflict) as refused:
        store.cancel(running)
    assert refused.value.extra["state"] == RUNNING
    store.end([(running, SUCCEEDED, {"results": []})])
    with pytest.raises(Conflict) as refused:
        store.cancel(running)
    assert refused.value.extra["state"] == SUCCEEDED


def test_an_idempotency_key_is_claimed_with_the_job_in_one_step(store: JobStore) -> None:
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(16)

    def submit() -> None:
        barrier.wait()
        created = store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS,
                               idempotency=("key-1", "digest-a"))
        results.append((created.job_id, created.new))

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(new for _, new in results) == 1
    assert store.get(results[0][0])["state"] == QUEUED  # the key never points at nothing
    with pytest.raises(Conflict):
        store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, idempotency=("key-1", "digest-b"))


def test_a_key_whose_job_expired_is_claimed_again(store: JobStore) -> None:
    first = store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, idempotency=("k", "d"))
    store.redis.delete(store.keys.job(first.job_id))
    second = store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, idempotency=("k", "d"))
    assert second.new and second.job_id != first.job_id


def test_listing_by_state_reads_no_results(store: JobStore) -> None:
    ids = [create(store) for _ in range(3)]
    store.leases.renew("a")
    store.start(ids[:1], "a")
    store.end([(ids[0], SUCCEEDED, {"results": [{"p": 1.0}]})])
    found, _ = store.recent(state=SUCCEEDED)
    assert [j["id"] for j in found] == [ids[0]] and "results" not in found[0]
    queued, _ = store.recent(state=QUEUED)
    assert {j["id"] for j in queued} == set(ids[1:])


def test_tidy_forgets_workers_gone_for_long(store: JobStore, clock: Clock) -> None:
    store.leases.renew("gone")
    store.redis.zadd(store.keys.workers(QUEUE_RECORDS), {"gone": clock()})
    clock.advance(3_700)
    store.leases.renew("alive")
    store.sweeper.tidy()
    assert store.redis.zrange(store.keys.holders, 0, -1) == [b"alive"]
    assert store.redis.zcard(store.keys.workers(QUEUE_RECORDS)) == 0


def test_a_full_queue_refuses_new_jobs_with_retry_after_from_its_drain_rate(store: JobStore, clock: Clock) -> None:
    accepted = [store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, limit=4).job_id
                for _ in range(4)]
    with pytest.raises(TooManyRequests) as idle:
        store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, limit=4)
    assert idle.value.status == 429 and idle.value.retry_after == 60  # nothing drained: ask for a minute
    assert idle.value.extra["depth"] == 4 and "are its workers running" in idle.value.detail
    assert store.admission.depth(QUEUE_RECORDS) == 4 and store.admission.depth("bulk") == 0
    # Two jobs end (a third is cancelled: it leaves the queue too); 40 s later two slots are taken again.
    store.leases.renew("w")
    store.start(accepted[:2], "w")
    store.end([(job_id, SUCCEEDED, {"results": []}) for job_id in accepted[:2]])
    store.cancel(accepted[2])
    assert store.admission.depth(QUEUE_RECORDS) == 1
    clock.advance(12)
    for _ in range(3):
        store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, limit=4)
    with pytest.raises(TooManyRequests) as measured:
        store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, limit=4)
    rate = store.admission.drain_rate(QUEUE_RECORDS)
    assert rate == pytest.approx(3 / 32)  # three ended within three whole 10 s windows and 2 s of this one
    assert measured.value.retry_after == math.ceil(1 / rate)  # one job must end before one more fits
    # A repeat of an accepted request is still answered, full queue or not.
    key = ("k", "digest")
    first = store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, idempotency=key)
    assert store.create(new_job_id(), "titanic", 1, "sha", [RECORD], QUEUE_RECORDS, idempotency=key,
                        limit=4).job_id == first.job_id


def test_a_dead_job_keeps_its_records_and_only_a_dead_job_replays(store: JobStore, clock: Clock) -> None:
    job_id = create(store, records=3)
    for attempt in (1, 2):
        store.leases.renew(f"w{attempt}")
        store.start([job_id], f"w{attempt}", max_attempts=1)
        clock.advance(16)
        swept(store)
    assert store.get(job_id)["state"] == DEAD
    assert store.redis.hexists(store.keys.job(job_id), "payload")
    assert [j["id"] for j in store.dead.page()[0]] == [job_id]
    replayed = store.dead.replay(job_id)
    assert (replayed["state"], replayed["attempts"], replayed["replays"]) == (QUEUED, 0, 1)
    assert "error" not in replayed and store.dead.page()[0] == [] and store.admission.depth(QUEUE_RECORDS) == 1
    store.leases.renew("w3")
    start = store.start([job_id], "w3", max_attempts=1)[0]
    assert start.state == RUNNING and start.records == [RECORD] * 3
    store.end([(job_id, SUCCEEDED, {"results": []})])
    assert not store.redis.hexists(store.keys.job(job_id), "payload")
    with pytest.raises(Conflict, match="only dead jobs"):
        store.dead.replay(job_id)
    with pytest.raises(Conflict, match="chunk"):
        store.dead.replay(f"{job_id}.0")


def test_after_a_redis_restart_every_queued_job_is_sent_again_at_once(store: JobStore, clock: Clock) -> None:
    waiting = create(store)
    store.publish([(QUEUE_RECORDS, [waiting])])  # its message may have been popped and lost in the restart
    store.redis.rpush(store.keys.queue(QUEUE_RECORDS), "another message")  # and the queue is busy
    assert swept(store) == []  # the first sweep learns the run id; nothing is due yet
    clock.advance(31)
    assert swept(store) == []  # due, but behind a backlog: postponed
    store.redis.set(store.keys.redis_run, "the run id of the Redis before the restart")
    assert swept(store) == [waiting]  # not due, queue busy: sent again because Redis restarted
    assert swept(store) == []  # once


def test_a_batch_has_its_progress_fields_from_submission_on_totals_null_until_planned() -> None:
    from batcomputer.jobqueue.keyspace import KIND_BATCH
    from batcomputer.jobqueue.records import decode_text

    queued = decode_text({"id": "b1", "kind": KIND_BATCH, "state": QUEUED, "count": "0", "attempts": "0"})
    assert {k: queued[k] for k in ("rows_total", "rows_done", "rows_failed", "chunks_total", "chunks_done",
                                   "rows_per_second", "eta_seconds")} == {
        "rows_total": None, "rows_done": 0, "rows_failed": 0, "chunks_total": None, "chunks_done": 0,
        "rows_per_second": None, "eta_seconds": None}
    planned = decode_text({"id": "b1", "kind": KIND_BATCH, "state": RUNNING, "rows_total": "500", "rows_done": "0",
                           "rows_failed": "0", "chunks_total": "2", "chunks_done": "0"})
    assert (planned["rows_total"], planned["chunks_total"]) == (500, 2)
    record = decode_text({"id": "r1", "state": QUEUED, "count": "1"})
    assert "rows_total" not in record  # record jobs have no file progress
