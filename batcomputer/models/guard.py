"""Guarded promotion: every move of a model's ``production`` alias (by a person, the retrain flow, anyone) opens
a watch window in which the new version's live signals are compared with those of the version it replaced; a
tripped guard moves ``production`` back (``by: guard``, the reason in the alias history).

Signals come from the cluster's metrics in Redis (what every worker adds, ``batcomputer.metrics``): jobs by
state, records by label and records with warnings, per model and version. The version replaced is judged on
everything it scored; the new one on what it scored since its window opened. Guards, each judged once the new
version has ``min_jobs`` jobs: its job failure rate, its warning rate (each may exceed the old one's by a
margin) and its label mix (PSI against the old one's). A window closes as passed after ``jobs`` jobs or
``minutes`` without a trip. Checks are idempotent and any worker may run them: the move back is a
compare-and-set on the alias, and a pinned alias is never moved (the watch says it is held).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batcomputer.errors import AliasMoved, AliasPinned
from batcomputer.jobqueue.keyspace import Keys
from batcomputer.metrics import JOBS_SCORED, RECORD_WARNINGS, RECORDS_SCORED
from batcomputer.models.rollout import RUNNING, STOPPED, Canary, CanaryStore

log = logging.getLogger("batcomputer.guard")
GUARD_ACTOR = "guard"
CANARY_ACTOR = "canary"  # who moves production when a canary reaches 100%
WATCHING, PASSED, TRIPPED, HELD = "watching", "passed", "tripped", "held"  # a window's states


@dataclass(frozen=True)
class Limits:
    jobs: int = 200  # the window closes as passed after this many of the new version's jobs...
    minutes: float = 30.0  # ...or this long, without a trip
    min_jobs: int = 20  # no guard judges on fewer jobs
    failure_margin: float = 0.05  # the new failure rate may exceed the old one's by this much
    warning_margin: float = 0.10  # the same for the share of records with warnings
    mix_psi: float = 0.25  # the PSI of the label mix past which it trips (the drift alert's threshold)


def signals(fields: dict[str, float], model: str, version: int) -> dict[str, Any]:
    """A version's counts from the cluster's metrics hash (decoded: series -> value)."""
    found: dict[str, Any] = {"succeeded": 0.0, "failed": 0.0, "records": 0.0, "warned": 0.0, "labels": {}}
    for name, value in fields.items():
        metric, labels_text, part = name.split("|", 2)
        if part != "value" or metric not in (JOBS_SCORED, RECORDS_SCORED, RECORD_WARNINGS):
            continue
        labels = dict(item.split("=", 1) for item in labels_text.split(",") if "=" in item)
        if labels.get("model") != model or labels.get("version") != str(version):
            continue
        if metric == JOBS_SCORED and labels.get("state") in ("succeeded", "failed"):
            found[labels["state"]] += value
        elif metric == RECORDS_SCORED:
            found["records"] += value
            found["labels"][labels.get("label", "")] = found["labels"].get(labels.get("label", ""), 0.0) + value
        elif metric == RECORD_WARNINGS:
            found["warned"] += value
    return found


def since(now: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    labels = {k: v - then["labels"].get(k, 0.0) for k, v in now["labels"].items()}
    return {**{k: now[k] - then[k] for k in ("succeeded", "failed", "records", "warned")}, "labels": labels}


def psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    """Population stability index of two label mixes (counts), each share floored at 1e-4."""
    total_e, total_a = sum(expected.values()), sum(actual.values())
    if total_e <= 0 or total_a <= 0:
        return 0.0
    value = 0.0
    for label in set(expected) | set(actual):
        e = max(expected.get(label, 0.0) / total_e, 1e-4)
        a = max(actual.get(label, 0.0) / total_a, 1e-4)
        value += (a - e) * math.log(a / e)
    return value


def judge(old: dict[str, Any], new: dict[str, Any], limits: Limits) -> tuple[list[dict[str, Any]], str | None]:
    """Each guard's figures, and the reason to move back (None: none tripped)."""
    def rate(part: float, whole: float) -> float:
        return part / whole if whole > 0 else 0.0

    old_jobs, new_jobs = old["succeeded"] + old["failed"], new["succeeded"] + new["failed"]
    old_failures, old_warnings = rate(old["failed"], old_jobs), rate(old["warned"], old["records"])
    guards: list[dict[str, Any]] = [
        {"guard": "failure_rate", "old": old_failures, "new": rate(new["failed"], new_jobs),
         "limit": old_failures + limits.failure_margin},
        {"guard": "warning_rate", "old": old_warnings, "new": rate(new["warned"], new["records"]),
         "limit": old_warnings + limits.warning_margin},
        {"guard": "label_mix_psi", "old": 0.0, "new": psi(old["labels"], new["labels"]), "limit": limits.mix_psi},
    ]
    if new_jobs < limits.min_jobs:
        return guards, None
    tripped = [g for g in guards if g["new"] > g["limit"] and not (g["guard"] == "label_mix_psi" and not old_jobs)]
    if not tripped:
        return guards, None
    return guards, "; ".join(f"{g['guard']} {g['new']:.3f} > {g['limit']:.3f}" for g in tripped) + \
        f" over {int(new_jobs)} jobs"


class Guard:
    """Watches a model's production alias (``check``, called by every worker's sweeper)."""

    def __init__(self, client: Any, prefix: str, registry: Any, alias: str, limits: Limits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.keys, self.registry, self.alias = client, Keys(prefix), registry, alias
        self.limits = limits or Limits()
        self.clock = clock

    def watch(self, model: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.keys.guard(model))
        return orjson.loads(raw) if raw else None

    def _save(self, model: str, watch: dict[str, Any]) -> None:
        self.redis.set(self.keys.guard(model), orjson.dumps(watch))

    def _fields(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.redis.hgetall(self.keys.metrics()).items()}

    def advance(self, model: str) -> Canary | None:
        """Judge a canary that has steps: after ``window_jobs`` of its jobs with its guards holding (against
        production's record), it takes the next step, and at 100 becomes production (by ``canary``, guarded
        like any move); a tripped guard stops it. Returns the canary as it now is."""
        store = CanaryStore(self.redis, self.keys.prefix)
        canary = store.get(model)
        if canary is None or canary.state != RUNNING or not canary.steps or canary.window_jobs <= 0:
            return canary
        production = self.registry.resolve(model, None, self.alias)
        fields = self._fields()
        if canary.start is None:  # the step begins now
            canary.start = signals(fields, model, canary.version)
            store.save(model, canary)
            return canary
        new = since(signals(fields, model, canary.version), canary.start)
        _, reason = judge(signals(fields, model, production), new, self.limits)
        if reason is not None:
            canary.state, canary.reason = STOPPED, f"guard tripped at {canary.percent:g}%: {reason}"
            log.warning("canary %s@%d stopped: %s", model, canary.version, canary.reason)
        elif new["succeeded"] + new["failed"] >= canary.window_jobs:
            step = canary.steps.pop(0)
            if step >= 100:
                try:
                    self.registry.set_alias(model, self.alias, canary.version, by=CANARY_ACTOR, expect=production,
                                            automatic=True, reason=f"canary held its guards at every step up "
                                                                   f"to {canary.percent:g}%")
                except (AliasMoved, AliasPinned) as exc:
                    canary.state, canary.reason = STOPPED, f"could not become {self.alias}: {exc}"
                    store.save(model, canary)
                    return canary
                store.clear(model)
                return None
            canary.percent, canary.start = step, None
        store.save(model, canary)
        return canary

    def check(self, model: str) -> dict[str, Any] | None:
        """Open a window on a new move, judge an open one, move back when a guard trips; returns the watch."""
        self.advance(model)
        production = self.registry.resolve(model, None, self.alias)
        watch = self.watch(model)
        now = self.clock()
        if watch is None or watch["version"] != production:
            history = self.registry.history(model, self.alias)
            move = history[-1] if history else None
            fields = self._fields()
            last = {k: v for k, v in watch.items() if k not in ("last", "start")} if watch and watch.get(
                "state") else (watch or {}).get("last")  # the latest window stays visible after the next move
            if move is None or move["to"] != production or move["from"] is None or move.get("by") == GUARD_ACTOR:
                watch = {"version": production, "state": None, "since": now, "last": last}  # nothing to guard
            else:
                watch = {"version": production, "previous": move["from"], "state": WATCHING, "opened": now,
                         "move": {k: move.get(k) for k in ("at", "by", "reason")},
                         "start": signals(fields, model, production), "guards": [], "reason": None,
                         "limits": self.limits.__dict__, "last": last}
            self._save(model, watch)
            return watch
        if watch.get("state") != WATCHING:
            return watch
        fields = self._fields()
        new = since(signals(fields, model, production), watch["start"])
        old = signals(fields, model, watch["previous"])
        watch["guards"], reason = judge(old, new, self.limits)
        watch["jobs"] = int(new["succeeded"] + new["failed"])
        if reason is not None:
            watch["reason"] = reason
            try:
                self.registry.set_alias(model, self.alias, watch["previous"], by=GUARD_ACTOR, expect=production,
                                        automatic=True, reason=f"guard tripped on {model}@{production}: {reason}")
                watch["state"] = TRIPPED
            except AliasPinned:
                watch["state"] = HELD  # a person pinned it: told, not moved
            except AliasMoved:
                return self.watch(model)  # someone moved it meanwhile: the next check opens its window
            watch["closed"] = now
            log.warning("guard %s %s@%d (back to %d): %s", watch["state"], model, production, watch["previous"],
                        reason)
        elif watch["jobs"] >= self.limits.jobs or now - watch["opened"] >= self.limits.minutes * 60:
            watch["state"], watch["closed"] = PASSED, now
        self._save(model, watch)
        return watch
