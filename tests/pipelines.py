"""Pipelines for failure tests, pickled into real bundles: one waits at a gate, one kills its worker."""

from __future__ import annotations

import os
import signal
from typing import Any

import redis


class Gated:
    """Scores like ``inner``, but each call first takes a token from a Redis list the test fills."""

    def __init__(self, inner: Any, redis_url: str, gate: str) -> None:
        self.inner, self.redis_url, self.gate = inner, redis_url, gate

    @property
    def classes_(self) -> Any:
        return self.inner.classes_

    def predict_proba(self, frame: Any) -> Any:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=None)  # the gate may stay shut for long
        client.rpush(f"{self.gate}:waiting", "1")
        if client.blpop([self.gate], timeout=120) is None:
            raise TimeoutError("the test never opened the gate")
        return self.inner.predict_proba(frame)


class Killer:
    """A poison pipeline: scoring anything kills the process that scores it, as a segfault or OOM would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def classes_(self) -> Any:
        return self.inner.classes_

    def predict_proba(self, frame: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class Broken:
    """A pipeline whose scoring raises, with a message a client must see only as a summary."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def classes_(self) -> Any:
        return self.inner.classes_

    def predict_proba(self, frame: Any) -> Any:
        raise ValueError("the model broke\n  File \"/secret/path/model.py\", line 7, in predict_proba")


class SlowToLoad:
    """Scores like ``inner``, but unpickling it waits until the test pushes a token onto a Redis list."""

    def __init__(self, inner: Any, redis_url: str, gate: str) -> None:
        self.inner, self.redis_url, self.gate = inner, redis_url, gate

    @property
    def classes_(self) -> Any:
        return self.inner.classes_

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        client = redis.Redis.from_url(self.redis_url, socket_timeout=None)
        client.rpush(f"{self.gate}:loading", "1")
        if client.blpop([self.gate], timeout=120) is None:
            raise TimeoutError("the test never let the bundle load")

    def predict_proba(self, frame: Any) -> Any:
        return self.inner.predict_proba(frame)
