"""Liveness (/healthz) and readiness (/readyz: Redis and registry reachable, workers per queue reported)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint

from api.context import gateway
from batcomputer.errors import Unavailable
from batcomputer.jobs import QUEUES

health = Blueprint("health", __name__)
HEARTBEAT_FRESH_SECONDS = 20


@health.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "alive"}


@health.get("/readyz")
def readyz() -> dict[str, Any]:
    gw = gateway()
    try:
        gw.redis.ping()
    except Exception as exc:
        raise Unavailable(f"Redis is unreachable: {exc}", retry_after=5) from None
    try:
        models = gw.registry.models()
    except Exception as exc:
        raise Unavailable(f"the registry {gw.registry.store.url} is unreadable: {exc}", retry_after=10) from None
    fresh = time.time() - HEARTBEAT_FRESH_SECONDS
    workers = {q: int(gw.redis.zcount(f"{gw.settings.key_prefix}workers:{q}", fresh, "+inf")) for q in QUEUES}
    return {"status": "ready", "redis": "ok", "registry": {"url": gw.registry.store.url, "models": models},
            "workers": workers}
