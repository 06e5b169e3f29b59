"""Liveness (/healthz) and readiness (/readyz: Redis reachable, every served model verified; workers, queue
depths and stream lag in the body, for people and autoscalers; readiness never depends on workers)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint

from api.context import gateway
from api.gateway import Gateway
from batcomputer.errors import BatcomputerError, Unavailable
from batcomputer.jobqueue.keyspace import QUEUES
from batcomputer.jobqueue.streams import StreamStore

health = Blueprint("health", __name__)
HEARTBEAT_FRESH_SECONDS = 20
VERIFIED_FOR_SECONDS = 30.0  # how long a verified bundle counts as verified before /readyz hashes it again


@health.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "alive"}


def check_models(gw: Gateway) -> dict[str, Any]:
    """Each model's current version (the default alias), verified file by file; problems by model."""
    registry = gw.registry
    try:
        models = registry.models()
    except Exception as exc:
        raise Unavailable(f"the registry {registry.store.url} is unreadable: {exc}", retry_after=10) from None
    if not models:
        raise Unavailable(f"the registry {registry.store.url} holds no models (missing or empty); train one "
                          "with `batcomputer train crime --promote`", retry_after=10, registry=registry.store.url)
    served: dict[str, Any] = {}
    problems: dict[str, Any] = {}
    now = time.monotonic()
    for model in models:
        try:
            version = registry.resolve(model, None, gw.settings.default_alias)
            if gw.verified.get((model, version), 0.0) <= now:
                registry.verify(model, version)
                gw.verified[(model, version)] = now + VERIFIED_FOR_SECONDS
            served[model] = version
        except BatcomputerError as exc:
            if exc.status == 404:  # a model without the default alias is not served by default: not a fault
                continue
            problems[model] = {"code": exc.code, "detail": exc.detail}
    if problems:
        raise Unavailable("served model(s) fail verification: " + "; ".join(f"{m}: {p['detail']}" for m, p in
                                                                          problems.items()),
                          retry_after=10, models=problems)
    return served


@health.get("/readyz")
def readyz() -> dict[str, Any]:
    gw = gateway()
    try:
        gw.redis.ping()
    except Exception as exc:
        raise Unavailable(f"Redis is unreachable: {exc}", retry_after=5) from None
    served = check_models(gw)
    workers = {q: gw.jobs.leases.live(q, HEARTBEAT_FRESH_SECONDS) for q in QUEUES}
    admission = gw.jobs.admission
    queues = {q: {"depth": admission.depth(q), "drain_per_second": round(admission.drain_rate(q), 2)} for q in QUEUES}
    return {"status": "ready", "redis": "ok", "registry": {"url": gw.registry.store.url, "models": sorted(served),
                                                          "serving": served}, "workers": workers,
            "queues": queues, "streams": stream_lag(gw, sorted(served))}


def stream_lag(gw: Gateway, models: list[str]) -> dict[str, Any]:
    """Per model with an input stream: unscored entries, and the rate its consumers report."""
    found = {}
    for model in models:
        store = StreamStore(gw.redis, gw.settings.key_prefix, model)
        if store.exists():
            found[model] = {"backlog": store.backlog(), "rate_per_second": round(store.rate(), 1)}
    return found
