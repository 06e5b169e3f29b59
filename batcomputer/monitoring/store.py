"""The latest monitor result of each model, in Redis: written by the monitor flow, read by the gateway
(``GET /api/models/{model}/monitoring`` and ``/metrics``), which never computes drift itself."""

from __future__ import annotations

import json
from typing import Any

from batcomputer.jobqueue.keyspace import Keys

STATES = ("ok", "warn", "alert")  # a monitor result's state, worst last
KEEP_SECONDS = 7 * 86_400  # a result older than a week is gone: the monitor stopped


class MonitorStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def save(self, result: dict[str, Any]) -> None:
        self.redis.set(self.keys.monitoring(result["model"]), json.dumps(result), ex=KEEP_SECONDS)

    def load(self, model: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.keys.monitoring(model))
        found: dict[str, Any] | None = json.loads(raw) if raw else None
        return found

    def models(self) -> list[str]:
        """Models with a monitor result."""
        prefix = self.keys.monitoring("")
        return sorted(key.decode()[len(prefix):] for key in self.redis.scan_iter(match=f"{prefix}*", count=1000))
