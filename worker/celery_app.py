"""The module-level Celery app for Celery's own tools: ``celery -A worker.celery_app inspect ping``, Flower.

It is built from the ``BATCOMPUTER_*`` environment when the module is imported (Celery's ``-A`` needs an app
at module level), with the broker and key prefix the workers use; the workers themselves build theirs in
``worker.__main__``.
"""

from __future__ import annotations

from batcomputer.jobqueue.keyspace import QUEUES
from batcomputer.settings import Settings
from worker.app import make_worker_app

app = make_worker_app(Settings.from_env(), list(QUEUES))
