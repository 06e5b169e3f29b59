"""Loaded pipelines, cached per (model, version) in each worker process; versions are immutable."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future

from batcomputer.models.bundle import Bundle
from batcomputer.models.registry import Registry


class BundleCache:
    """A small LRU of verified, loaded bundles; a newly promoted version is loaded on first use. A load
    (seconds for a large pipeline) happens outside the cache's lock: jobs of other models, and of versions
    already loaded, go on scoring meanwhile; concurrent requests for the same version share one load."""

    def __init__(self, registry: Registry, size: int = 8) -> None:
        self.registry = registry
        self.size = size
        self._bundles: OrderedDict[tuple[str, int], Bundle] = OrderedDict()
        self._loading: dict[tuple[str, int], Future[Bundle]] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: int) -> Bundle:
        key = (model, version)
        with self._lock:
            if key in self._bundles:
                self._bundles.move_to_end(key)
                return self._bundles[key]
            loading = self._loading.get(key)
            mine = loading is None
            if loading is None:
                loading = self._loading[key] = Future()
        if not mine:
            return loading.result()
        try:
            bundle = self.registry.bundle(model, version, pipeline=True)
        except BaseException as exc:
            with self._lock:
                self._loading.pop(key, None)
            loading.set_exception(exc)
            raise
        with self._lock:
            self._loading.pop(key, None)
            self._bundles[key] = bundle
            while len(self._bundles) > self.size:
                self._bundles.popitem(last=False)
        loading.set_result(bundle)
        return bundle
