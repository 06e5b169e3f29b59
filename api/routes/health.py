"""Liveness (/healthz) and readiness (/readyz: Redis reachable, every served model verified; workers, queue
depths, stream lag and the capture's health in the body, for people and autoscalers; readiness never depends
on workers, nor on the capture: a capture root that cannot be written shows as ``degraded`` while scoring goes
on)."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint

from api.context import gateway
from api.gateway import Gateway
from batcomputer.errors import BatcomputerError, Unavailable
from batcomputer.jobqueue.keyspace import QUEUES
from batcomputer.jobqueue.streams import StreamStore
from batcomputer.monitoring.store import CaptureHealth

health = Blueprint("health", __name__)
log = logging.getLogger("batcomputer.api")
HEARTBEAT_FRESH_SECONDS = 20
VERIFIED_FOR_SECONDS = 30.0  # how long a verified bundle counts as verified before /readyz hashes it again


@health.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "alive"}


def check_models(gw: Gateway) -> dict[str, Any]:
    """Each model's current version (the default alias), verified file by file; problems by model."""
    registry = gw.registry

    def hide(text: str) -> str:  # /readyz is public: where the registry lies is the operator's (in the log)
        return text.replace(registry.store.url, "<registry>")

    try:
        models = registry.models()
    except Exception as exc:
        log.warning("the registry %s is unreadable: %s", registry.store.url, exc)
        raise Unavailable(f"the registry is unreadable: {hide(str(exc))}", retry_after=10) from None
    if not models:
        log.warning("the registry %s holds no models", registry.store.url)
        raise Unavailable("the registry holds no models (missing or empty); train one with `batcomputer train "
                          "crime --promote`", retry_after=10)
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
            log.warning("model %s fails verification: %s", model, exc.detail)
            problems[model] = {"code": exc.code, "detail": hide(exc.detail)}
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
    return {"status": "ready", "redis": "ok", "registry": {"models": sorted(served),
                                                          "serving": served}, "workers": workers,
            "queues": queues, "streams": stream_lag(gw, sorted(served)),
            "capture": CaptureHealth(gw.redis, gw.settings.key_prefix).state(time.time())}


def stream_lag(gw: Gateway, models: list[str]) -> dict[str, Any]:
    """Per model with an input stream: unscored entries, and the rate its consumers report."""
    found = {}
    for model in models:
        store = StreamStore(gw.redis, gw.settings.key_prefix, model)
        if store.exists():
            found[model] = {"backlog": store.backlog(), "rate_per_second": round(store.rate(), 1)}
    return found
