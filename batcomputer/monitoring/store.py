"""What the monitoring keeps in Redis for the gateway, which never computes it: the latest monitor result of
each model, written by the monitor flow (``GET /api/models/{model}/monitoring`` and ``/metrics``), and the
capture's health, written by each capturing process when a write fails or works again (``/readyz``)."""

from __future__ import annotations

import json
from typing import Any

from batcomputer.jobqueue.keyspace import Keys

STATES = ("ok", "warn", "alert")  # a monitor result's state, worst last
KEEP_SECONDS = 7 * 86_400  # a result older than a week is gone: the monitor stopped
HISTORY = 288  # monitor results kept in brief per model: a day of the flow's 5-minute schedule
DEGRADED_FOR_SECONDS = 900  # a process that dropped captured records this recently makes the capture degraded


class MonitorStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def save(self, result: dict[str, Any]) -> None:
        """Keep ``result`` as the model's latest, and its brief (``brief``) in the model's history."""
        model = result["model"]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.monitoring(model), json.dumps(result), ex=KEEP_SECONDS)
            pipe.lpush(self.keys.monitoring_history(model), json.dumps(brief(result)))
            pipe.ltrim(self.keys.monitoring_history(model), 0, HISTORY - 1)
            pipe.expire(self.keys.monitoring_history(model), KEEP_SECONDS)
            pipe.execute()

    def load(self, model: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.keys.monitoring(model))
        found: dict[str, Any] | None = json.loads(raw) if raw else None
        return found

    def history(self, model: str) -> list[dict[str, Any]]:
        """The briefs of the model's latest results, oldest first."""
        return [json.loads(raw) for raw in reversed(self.redis.lrange(self.keys.monitoring_history(model), 0, -1))]

    def models(self) -> list[str]:
        """Models with a monitor result."""
        prefix = self.keys.monitoring("")
        return sorted(key.decode()[len(prefix):] for key in self.redis.scan_iter(match=f"{prefix}*", count=1000))


def brief(result: dict[str, Any]) -> dict[str, Any]:
    """What a plot over time needs of one monitor result: when, the state, and per version in the last hour its
    records, PSI per field and live log loss."""
    versions = {}
    for version, seen in result.get("windows", {}).get("hour", {}).items():
        quality = seen.get("quality") or {}
        versions[version] = {"records": seen.get("records", 0),
                             "psi": {f["field"]: f.get("psi") for f in seen.get("fields", [])},
                             **({"log_loss": quality["log_loss"]} if quality.get("log_loss") is not None else {})}
    return {"at": result.get("at"), "state": result.get("state"), "versions": versions}


class CaptureHealth:
    """Per capturing process, what its last failed write dropped; a process that writes again is taken off.
    Written once per flush that changes it, never on the scoring path."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.redis = client
        self.key = Keys(prefix).capture_health

    def dropped(self, name: str, rows: int, reason: str, at: float) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, name, json.dumps({"rows": rows, "reason": reason, "at": at}))
            pipe.expire(self.key, KEEP_SECONDS)
            pipe.execute()

    def wrote(self, name: str) -> None:
        self.redis.hdel(self.key, name)

    def state(self, now: float) -> dict[str, Any]:
        """``ok``, or ``degraded`` with the processes that dropped records lately, how many, and why (the
        error's type only: ``/readyz`` is public)."""
        recent = [found for found in map(json.loads, self.redis.hvals(self.key))
                  if now - found["at"] <= DEGRADED_FOR_SECONDS]
        if not recent:
            return {"state": "ok"}
        return {"state": "degraded", "processes": len(recent), "dropped": sum(found["rows"] for found in recent),
                "reasons": sorted({found["reason"] for found in recent}),
                "since": min(found["at"] for found in recent)}
