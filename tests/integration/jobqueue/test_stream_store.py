"""The stream store's producer side against a real Redis: the backlog limit holds under concurrent producers
(the probe of issue 30 got 5,000 entries past a limit of 2,000 because it was checked apart from the append),
and the backlog counts what consumers have not finished, never what they have."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis

from batcomputer.errors import TooManyRequests
from batcomputer.jobqueue.streams import StreamStore
from tests.conftest import remove_keys

LIMIT = 2_000


@pytest.fixture
def streams(redis_base_url: str) -> Iterator[StreamStore]:
    prefix = f"bct-{uuid.uuid4().hex[:10]}:"
    store = StreamStore(redis.Redis.from_url(redis_base_url), prefix, "crime")
    store.ensure_group()
    yield store
    remove_keys(redis_base_url, prefix)


def records(count: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"month": 1 + (start + i) % 12}) for i in range(count)]


def test_concurrent_producers_never_pass_the_backlog_limit(streams: StreamStore) -> None:
    accepted: list[int] = []
    refused: list[TooManyRequests] = []
    lock = threading.Lock()

    def produce(worker: int) -> None:
        for round_ in range(20):
            try:
                ids = streams.append(records(50, worker * 1000 + round_ * 50), LIMIT, {"source": f"p{worker}"})
            except TooManyRequests as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    accepted.append(len(ids))

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]  # 8,000 offered
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(accepted) == LIMIT == streams.backlog() == streams.redis.xlen(streams.input)
    assert len(refused) == 160 - LIMIT // 50
    assert all(exc.extra["limit"] == LIMIT and exc.retry_after >= 1 for exc in refused)
    entry = streams.redis.xrange(streams.input, count=1)[0][1]
    assert set(entry) == {b"record", b"source"}  # each entry carries the metadata given


def test_the_backlog_shrinks_as_consumers_finish_and_room_returns(streams: StreamStore) -> None:
    streams.append(records(LIMIT), LIMIT)
    with pytest.raises(TooManyRequests):
        streams.append(records(1), LIMIT)
    taken = streams.read("c1", 500, 100)
    assert streams.backlog() == LIMIT  # read but not yet finished: still pending, still backlog
    streams.deliver([(entry.id, {"label": "x"}) for entry in taken], [])
    assert streams.backlog() == LIMIT - 500
    streams.trim_input()  # trimming what was scored leaves the count alone
    assert streams.backlog() == LIMIT - 500
    assert len(streams.append(records(500), LIMIT)) == 500
    with pytest.raises(TooManyRequests):
        streams.append(records(1), LIMIT)
