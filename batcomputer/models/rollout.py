"""A model's canary: a version that takes a share of the unpinned traffic (jobs and ``/api/predict`` calls that
name neither a version nor an alias), kept in Redis per model and routed sticky by the client's key. A canary
with ``steps`` advances itself (10 -> 50 -> 100) each time its guards hold over ``window_jobs`` of its jobs, and
ends as production; a tripped guard stops it (``batcomputer.models.guard``).

A request that sends a key lands on the same side every time (a hash of the model and the key, in basis
points, against the percent); one without a key is drawn at random. Pinned requests are never rerouted.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from batcomputer.jobqueue.keyspace import Keys

CANARY_ALIAS = "canary"  # what a job routed to the canary records as its alias


RUNNING, STOPPED = "running", "stopped"  # a canary's states: taking its share, or stopped by a guard


@dataclass
class Canary:
    version: int
    percent: float  # 0 < percent < 100
    by: str
    at: str
    steps: list[float] = field(default_factory=list)  # the percents still to come; 100 ends it as production
    window_jobs: int = 0  # the canary's jobs judged at each step before the next (0: it never advances)
    state: str = RUNNING
    reason: str | None = None  # why a guard stopped it, or why it ended
    start: dict[str, Any] | None = None  # both versions' counts when the step began (``batcomputer.models.guard``)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "start"}


def takes_canary(model: str, percent: float, sticky: str | None, draw: Callable[[], float] = random.random) -> bool:
    """Whether a request goes to the canary: by its client key when it sends one (the same answer every time),
    else at random."""
    if sticky is None:
        return draw() * 100 < percent
    digest = hashlib.blake2b(f"{model}\0{sticky}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < round(percent * 100)


class CanaryStore:
    def __init__(self, client: Any, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.clock = clock

    def get(self, model: str) -> Canary | None:
        raw = self.redis.get(self.keys.canary(model))
        return Canary(**orjson.loads(raw)) if raw else None

    def set(self, model: str, version: int, percent: float, by: str, steps: list[float] | None = None,
            window_jobs: int = 0) -> Canary:
        canary = Canary(version, percent, by, datetime.fromtimestamp(self.clock(), UTC).isoformat(),
                        sorted(steps or []), window_jobs)
        self.save(model, canary)
        return canary

    def save(self, model: str, canary: Canary) -> None:
        self.redis.set(self.keys.canary(model), orjson.dumps(canary.__dict__))

    def clear(self, model: str) -> bool:
        return bool(self.redis.delete(self.keys.canary(model)))
