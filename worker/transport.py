"""kombu's Redis transport for the workers, with one repair: a channel whose connection Celery already
collected after Redis went away never stops the worker.

When Redis goes away, Celery's consumer (5.7) collects the broken connection, which detaches kombu's transport
from it, then closes it; closing the channel restores the messages it had taken but not acknowledged, which
needs a client, which needs the detached connection: ``AttributeError: 'NoneType' object has no attribute
'hostname'``. Celery takes that for an unrecoverable error: the worker stops consuming, and either exits or
hangs in its shutdown (seen in tests/integration/worker/test_outage.py). Acknowledging or rejecting a message of
that channel fails the same way. Here each is logged and skipped: the messages are still in kombu's unacknowledged hash
in Redis, so a live worker restores them after the visibility timeout (a job that already ended is skipped
when its message comes back), and if Redis lost them too, the sweeper sends their jobs again.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("batcomputer.worker")


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)
        except AttributeError as exc:  # the channel's connection was collected
            log.warning("could not acknowledge a message on a closed connection (%s); it returns after the "
                        "visibility timeout and its jobs, already ended, are skipped", exc)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError as exc:
            log.warning("could not reject a message on a closed connection (%s); it returns after the "
                        "visibility timeout", exc)

    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except (AttributeError, redis.RedisError, OSError) as exc:
            log.warning("could not hand %d unacknowledged message(s) back now (%s: %s); they return after the "
                        "visibility timeout", len(self._delivered), type(exc).__name__, exc)
            self._delivered.clear()  # kept in Redis, not here: a second close must not try again


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"  # what the workers' Celery app is configured with
