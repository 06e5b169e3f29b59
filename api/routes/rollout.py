"""Rollout routes: a model's canary, the version that takes a share of its unpinned traffic (admin), and the
rollout as a whole: production, the canary and the watch window of production's latest move."""

from __future__ import annotations

import math
from typing import Any

import orjson
from flask import Blueprint

from api import auth
from api.context import gateway
from api.routes.models import object_body
from batcomputer.errors import BadRequest, NotFound
from batcomputer.jobqueue.keyspace import Keys
from batcomputer.models.registry import MAX_VERSION

rollout = Blueprint("rollout", __name__, url_prefix="/api/models")


def canary_body(model: str) -> dict[str, Any]:
    gw = gateway()
    canary = gw.canaries.get(model)
    production = gw.registry.resolve(model, None, gw.settings.default_alias)
    return {"model": model, "production": production, "canary": canary.as_dict() if canary else None}


@rollout.get("/<model>/rollout")
def show_rollout(model: str) -> dict[str, Any]:
    """Production, the canary, and the guards' watch of production's latest move (their figures, and why a
    tripped guard moved it back)."""
    gw = gateway()
    gw.registry.versions(model)
    raw = gw.redis.get(Keys(gw.settings.key_prefix).guard(model))
    watch = orjson.loads(raw) if raw else None
    if watch:
        watch.pop("start", None)
    return {**canary_body(model), "watch": watch}


@rollout.get("/<model>/canary")
def show_canary(model: str) -> dict[str, Any]:
    gateway().registry.versions(model)  # an unknown model is a 404
    return canary_body(model)


@rollout.put("/<model>/canary")
def set_canary(model: str) -> dict[str, Any]:
    """``{"version": N, "percent": P}``: version N takes P% of the unpinned jobs and /api/predict calls
    (sticky by the record's key, ``?key=``); every result names the version that scored it. With ``"steps":
    [50, 100]`` it advances each time its guards hold over ``window_jobs`` of its jobs (default
    ``BATCOMPUTER_GUARD_JOBS``), and at 100 becomes production."""
    body = object_body()
    version, percent = body.get("version"), body.get("percent")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise BadRequest(f"version must be a whole number from 1 to {MAX_VERSION}", field="version")
    if (isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent)
            or not 0 < percent < 100):
        raise BadRequest("percent must be a number above 0 and below 100 (100 is a promotion: move the alias)",
                         field="percent")
    steps, window = body.get("steps") or [], body.get("window_jobs")
    if (not isinstance(steps, list) or any(isinstance(x, bool) or not isinstance(x, int | float) for x in steps)
            or sorted(set(steps)) != steps or (steps and (steps[0] <= percent or steps[-1] > 100))):
        raise BadRequest("steps must be increasing percents above percent, up to 100 (where the canary becomes "
                         "production)", field="steps")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise BadRequest("window_jobs must be a whole number of jobs, at least 1", field="window_jobs")
    gw = gateway()
    gw.pin(model, str(version))  # the version must exist and verify
    if version == gw.registry.resolve(model, None, gw.settings.default_alias):
        raise BadRequest(f"version {version} is already {gw.settings.default_alias}", field="version")
    gw.canaries.set(model, version, float(percent), auth.actor(), [float(x) for x in steps],
                    (window or gw.settings.guard_jobs) if steps else 0)
    return canary_body(model)


@rollout.delete("/<model>/canary")
def clear_canary(model: str) -> dict[str, Any]:
    gw = gateway()
    if not gw.canaries.clear(model):
        raise NotFound(f"model {model!r} has no canary", model=model)
    return canary_body(model)
