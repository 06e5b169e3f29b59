"""Loaded pipelines, cached per (model, version) in each worker process; versions are immutable."""

from __future__ import annotations

import threading
from collections import OrderedDict

from batcomputer.bundle import Bundle
from batcomputer.registry import Registry


class BundleCache:
    """A small LRU of verified, loaded bundles; a newly promoted version is loaded on first use."""

    def __init__(self, registry: Registry, size: int = 8) -> None:
        self.registry = registry
        self.size = size
        self._bundles: OrderedDict[tuple[str, int], Bundle] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, version: int) -> Bundle:
        key = (model, version)
        with self._lock:
            if key in self._bundles:
                self._bundles.move_to_end(key)
                return self._bundles[key]
            bundle = self.registry.bundle(model, version, pipeline=True)
            self._bundles[key] = bundle
            while len(self._bundles) > self.size:
                self._bundles.popitem(last=False)
            return bundle
