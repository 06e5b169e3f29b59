"""The bundle cache: a slow load of one model never holds up scoring of the others."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path

import redis

from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.registry_store import LocalStore
from tests.conftest import remove_keys, wait_until
from tests.pipelines import SlowToLoad
from worker.bundle_cache import BundleCache


def test_a_slow_load_blocks_neither_other_models_nor_loaded_versions(tmp_path: Path, titanic_draft: Draft,
                                                                     redis_base_url: str) -> None:
    gate = f"bct-{uuid.uuid4().hex[:10]}:gate"
    registry = Registry(LocalStore(tmp_path / "registry"))
    registry.publish(titanic_draft)
    slow = dataclasses.replace(titanic_draft, model="slow", schema=dataclasses.replace(titanic_draft.schema,
                                                                                       model="slow"),
                               pipeline=SlowToLoad(titanic_draft.pipeline, redis_base_url, gate))
    registry.publish(slow)
    cache = BundleCache(registry)
    cache.get("titanic", 1)
    loaded: list[object] = []
    threads = [threading.Thread(target=lambda: loaded.append(cache.get("slow", 1))) for _ in range(2)]
    for thread in threads:
        thread.start()
    gauge = redis.Redis.from_url(redis_base_url)
    try:
        wait_until(lambda: gauge.llen(f"{gate}:loading") >= 1, 30, "the slow bundle to start loading")
        assert cache.get("titanic", 1).model == "titanic"  # answered while the other load waits
        registry.publish(dataclasses.replace(titanic_draft, metrics={**titanic_draft.metrics, "tag": 2}))
        assert cache.get("titanic", 2).version == 2  # a new version of another model loads meanwhile too
        gauge.rpush(gate, "go")
        for thread in threads:
            thread.join(30)
        assert len(loaded) == 2 and loaded[0] is loaded[1]  # two callers, one load
        assert gauge.llen(f"{gate}:loading") == 1
    finally:
        remove_keys(redis_base_url, gate)
