"""A worker's Prometheus endpoint: its own series (every process of it flushes into its Redis hash)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from batcomputer.jobqueue.connection import redis_client
from batcomputer.jobqueue.keyspace import Keys
from batcomputer.metrics import HashCollector
from batcomputer.settings import Settings

log = logging.getLogger("batcomputer.worker")


def node_name(role: str) -> str:
    """This worker's name, in the metrics and as its Celery node name: role and supervising process @ host
    (unique per host, as Celery's control commands and Flower need)."""
    return f"{role}-{os.getpid()}@{socket.gethostname()}"


def serve_metrics(settings: Settings, node: str, port: int | None = None) -> Any:
    """Serve ``node``'s series on ``port`` (``BATCOMPUTER_WORKER_METRICS_PORT`` by default; 0: none) from a
    thread of this process. A port in use is logged and skipped: metrics never stop a worker."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    port = settings.worker_metrics_port if port is None else port
    if not port:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HashCollector(redis_client(settings), Keys(settings.key_prefix).metrics(node)))
    try:
        server, _ = start_http_server(port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        log.warning("no /metrics for %s: port %d: %s", node, port, exc)
        return None
    log.info("metrics of %s on http://%s:%d/metrics", node, settings.metrics_host, port)
    return server
