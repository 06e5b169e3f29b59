"""The Celery app every worker runs, and the score message publishers write themselves (Celery's format)."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from typing import TYPE_CHECKING, Any

from batcomputer.jobqueue.connection import redis_url
from batcomputer.jobqueue.keyspace import QUEUE_RECORDS, TASK_SCORE
from batcomputer.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


def make_celery(settings: Settings) -> Celery:
    """A Celery app on Redis with JSON only, late acks and requeue of work lost with its worker."""
    from celery import Celery  # workers only: the gateway publishes with ``task_message``

    url = redis_url(settings)
    visibility = settings.visibility_timeout_seconds
    app = Celery("batcomputer", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE_RECORDS,
        task_ignore_result=True,  # job state and results live in the job records (batcomputer.jobqueue.jobs)
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


def task_message(job_ids: list[str], queue: str) -> str:
    """The broker message of one score task carrying ``job_ids``, exactly as Celery (protocol 2) and kombu's
    Redis transport would write it to the queue's list, so that publishers can push it themselves in the
    same Redis script that marks the jobs sent: one round trip, none of kombu's per-publish bookkeeping.
    The worker side is plain Celery; ``tests/integration/jobqueue/test_broker.py`` holds this to what
    ``send_task`` writes."""
    task_id = str(uuid.uuid4())
    args = [job_ids]
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    headers: dict[str, Any] = {
               "lang": "py", "task": TASK_SCORE, "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
               "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}", "origin": _ORIGIN,
               "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}
    properties = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                  "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                  "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": base64.b64encode(body.encode()).decode(), "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": headers, "properties": properties})


_ORIGIN = f"batcomputer@{socket.gethostname()}"
