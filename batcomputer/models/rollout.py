"""A model's canary: a version that takes a share of the unpinned traffic (jobs and ``/api/predict`` calls that
name neither a version nor an alias), kept in Redis per model and routed sticky by the client's key.

A request that sends a key lands on the same side every time (a hash of the model and the key, in basis
points, against the percent); one without a key is drawn at random. Pinned requests are never rerouted.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batcomputer.jobqueue.keyspace import Keys

CANARY_ALIAS = "canary"  # what a job routed to the canary records as its alias


@dataclass(frozen=True)
class Canary:
    version: int
    percent: float  # 0 < percent < 100
    by: str
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "percent": self.percent, "by": self.by, "at": self.at}


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
        found = {k.decode(): v.decode() for k, v in self.redis.hgetall(self.keys.canary(model)).items()}
        if not found:
            return None
        return Canary(int(found["version"]), float(found["percent"]), found.get("by", ""), found.get("at", ""))

    def set(self, model: str, version: int, percent: float, by: str) -> Canary:
        canary = Canary(version, percent, by, datetime.fromtimestamp(self.clock(), UTC).isoformat())
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.canary(model))
            pipe.hset(self.keys.canary(model), mapping={k: str(v) for k, v in canary.as_dict().items()})
            pipe.execute()
        return canary

    def clear(self, model: str) -> bool:
        return bool(self.redis.delete(self.keys.canary(model)))
