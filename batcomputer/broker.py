"""The Celery app configuration and Redis connections every component shares, built from settings."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery

from batcomputer.errors import ConfigurationError
from batcomputer.keyspace import QUEUE_RECORDS
from batcomputer.settings import Settings


def redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise ConfigurationError("BATCOMPUTER_REDIS_URL is not set; set it, or start everything with "
                                 "`batcomputer up`, which finds or starts a Redis")
    return settings.redis_url


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A Redis client with short timeouts: an outage must surface as an error, not a hang."""
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("socket_timeout", 10)
    options.setdefault("health_check_interval", 15)
    return redis.Redis.from_url(redis_url(settings), **options)


def make_celery(settings: Settings) -> Celery:
    """A Celery app on Redis with JSON only, late acks and requeue of work lost with its worker."""
    url = redis_url(settings)
    visibility = settings.visibility_timeout_seconds
    app = Celery("batcomputer", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE_RECORDS,
        task_ignore_result=True,  # job state and results live in the job records (batcomputer.jobs)
        result_expires=settings.job_ttl_seconds,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        broker_transport_options={
            "visibility_timeout": visibility,
            "global_keyprefix": settings.key_prefix,
            # Every live worker looks for messages held past the visibility timeout every few seconds (a
            # worker that died with messages it had prefetched): they are back within visibility + 5 s.
            "unacked_restore_interval": max(1, min(5, visibility // 3)),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(10, visibility),
            "socket_timeout": 10,
            "socket_connect_timeout": 2,
        },
        result_backend_transport_options={"global_keyprefix": settings.key_prefix},
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                   "interval_max": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app
