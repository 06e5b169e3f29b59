"""Pipelines for failure tests, pickled into real bundles: at a gate, killing, raising, slow to load, hanging."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

import redis

from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings


class Wrapped:
    """Scores like ``inner`` (the fitted pipeline it wraps) unless a subclass says otherwise."""

    def __init__(self, inner: Any, redis_url: str = "", gate: str = "") -> None:
        self.inner, self.redis_url, self.gate = inner, redis_url, gate

    @property
    def classes_(self) -> Any:
        return self.inner.classes_

    def predict_proba(self, frame: Any) -> Any:
        return self.inner.predict_proba(frame)

    def take_token(self, announce: str, what: str) -> None:
        """Announce on ``<gate>:<announce>``, then wait for a token the test pushes onto ``<gate>``."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=None)  # the gate may stay shut for long
        client.rpush(f"{self.gate}:{announce}", "1")
        if client.blpop([self.gate], timeout=120) is None:
            raise TimeoutError(f"the test never let the {what} go on")


class Gated(Wrapped):
    """Each scoring call first takes a token from a Redis list the test fills."""

    def predict_proba(self, frame: Any) -> Any:
        self.take_token("waiting", "scoring")
        return self.inner.predict_proba(frame)


class HostGated(Wrapped):
    """Announces the scoring host's name on ``<gate>:hosts``, then takes a token from the gate."""

    def predict_proba(self, frame: Any) -> Any:
        import socket

        client = redis.Redis.from_url(self.redis_url, socket_timeout=None)
        client.rpush(f"{self.gate}:hosts", socket.gethostname())
        if client.blpop([self.gate], timeout=120) is None:
            raise TimeoutError("the test never opened the gate")
        return self.inner.predict_proba(frame)


class Killer(Wrapped):
    """A poison pipeline: scoring anything kills the process that scores it, as a segfault or OOM would."""

    def predict_proba(self, frame: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class KillerWhileFlagged(Wrapped):
    """Kills the process that scores while the Redis key ``<gate>`` exists (a cause an operator can remove,
    as an undersized memory limit); scores like ``inner`` once it is gone."""

    def predict_proba(self, frame: Any) -> Any:
        if redis.Redis.from_url(self.redis_url).exists(self.gate):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.predict_proba(frame)


class Broken(Wrapped):
    """A pipeline whose scoring raises, with a message a client must see only as a summary."""

    def predict_proba(self, frame: Any) -> Any:
        raise ValueError("the model broke\n  File \"/secret/path/model.py\", line 7, in predict_proba")


class SlowToLoad(Wrapped):
    """Unpickling it waits until the test pushes a token onto the gate."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.take_token("loading", "bundle load")


class HangOn:
    """A custom transformer that never returns when a field holds one value while the Redis key ``flag`` exists
    (a cause that can be fixed): it loops around a blocking call, as code waiting on a lock or a socket would."""

    def __init__(self, field: str, value: Any, redis_url: str, flag: str) -> None:
        self.field, self.value, self.redis_url, self.flag = field, value, redis_url, flag

    def fit(self, frame: Any, y: Any = None) -> HangOn:
        return self

    def transform(self, frame: Any) -> Any:
        if (frame[self.field] == self.value).any() and redis.Redis.from_url(self.redis_url).exists(self.flag):
            while True:
                time.sleep(0.01)
        return frame


def hanging(inner: Any, field: str, value: Any, redis_url: str, flag: str) -> Any:
    """``inner`` (a fitted pipeline) behind a ``HangOn`` step."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("hang", HangOn(field, value, redis_url, flag)), ("model", inner)])


def publish(services: Any, draft: Draft, name: str, pipeline: Any, promote: bool = True, tag: int = 0) -> int:
    """Publish ``pipeline`` as model ``name`` (with ``draft``'s schema) in the services' registry."""
    settings: Settings = services.settings
    registry = Registry.from_settings(settings)
    schema = dataclasses.replace(draft.schema, model=name)
    version = registry.publish(dataclasses.replace(draft, model=name, pipeline=pipeline, schema=schema,
                                                   metrics={**draft.metrics, "tag": tag})).version
    if promote:
        registry.set_alias(name, "production", version)
    return version
