"""The workers' Redis transport: closing a channel after Redis went away, as Celery does, never raises."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from cli.launchers.redis_server import LocalRedis, free_port, start_redis_server
from worker.transport import TRANSPORT

PREFIX = "bct-transport:"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[LocalRedis, int]]:
    port = free_port()
    server = start_redis_server(tmp_path / "redis", port)
    yield server, port
    server.stop()


def take_one_message(url: str, transport: str | None) -> tuple[Connection, list[Any]]:
    """A connection whose channel holds one message taken and not acknowledged (a task in hand)."""
    connection = Connection(url, transport=transport, transport_options={"global_keyprefix": PREFIX})
    queue = Queue("bulk", Exchange("bulk", type="direct"), "bulk")
    with connection.Producer() as producer:
        producer.publish({"job_ids": ["j1"]}, exchange=queue.exchange, routing_key="bulk", declare=[queue])
    taken: list[Any] = []
    connection.Consumer(queue, callbacks=[lambda body, message: taken.append(message)], prefetch_count=1).consume()
    connection.drain_events(timeout=5)
    assert len(taken) == 1
    return connection, taken


def finish(connection: Connection, taken: list[Any], how: str) -> None:
    """What Celery does with a connection it collected after a broker error (collect detaches the transport),
    and with a message of it: close the connection, or acknowledge or reject the message."""
    connection._do_close_transport()  # what Connection.collect() ends with
    if how == "close":
        connection.close()
        return
    with contextlib.suppress(AttributeError):  # kombu's own transport fails here already: see the close case
        connection.close()
    if how == "ack":  # a task that was running when Redis went away ends, and its message is acknowledged
        taken[0].ack()
    else:
        taken[0].reject(requeue=True)


@pytest.mark.parametrize("how", ["close", "ack", "reject"])
def test_a_collected_connection_keeps_the_worker_and_the_message(tmp_path: Path, how: str,
                                                                  private_redis: tuple[LocalRedis, int]) -> None:
    server, port = private_redis
    connection, taken = take_one_message(server.url, TRANSPORT)
    server.stop()
    finish(connection, taken, how)  # kombu's own transport raises AttributeError here (below); this one logs
    restarted = start_redis_server(tmp_path / "redis", port)  # the same data (append-only file)
    try:
        import redis

        client = redis.Redis.from_url(restarted.url)
        assert client.hlen(f"{PREFIX}unacked") == 1  # still there for a live worker to restore after the timeout
    finally:
        restarted.stop()


@pytest.mark.parametrize("how", ["close", "ack", "reject"])
def test_kombus_own_transport_still_needs_the_repair(how: str, private_redis: tuple[LocalRedis, int]) -> None:
    """When kombu fixes this, this test fails, and worker/transport.py can go."""
    server, _ = private_redis
    connection, taken = take_one_message(server.url, None)
    server.stop()
    with pytest.raises(AttributeError, match="NoneType"):
        finish(connection, taken, how)
