"""Micro-batching: single records waiting in one worker are scored together, one call per model version."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from batcomputer.bundle import Bundle

log = logging.getLogger("batcomputer.batcher")

Score = Callable[[Bundle, list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class BatchStats:
    """Batch sizes seen since start: logged every ``interval`` seconds."""

    batches: int = 0
    records: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def add(self, size: int) -> None:
        self.batches += 1
        self.records += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def summary(self) -> str:
        mean = self.records / self.batches if self.batches else 0.0
        return f"{self.batches} batches, {self.records} records, mean {mean:.1f}, largest {self.largest}"


class Batcher:
    """Collects single records from many task threads; scores what waits, up to ``max_records`` at a time."""

    def __init__(self, score: Score, max_records: int, window_seconds: float, log_every: float = 10.0) -> None:
        self._score = score
        self.max_records = max_records
        self.window = window_seconds
        self.stats = BatchStats()
        self._log_every = log_every
        self._queue: queue.SimpleQueue[tuple[Bundle, dict[str, Any], Future[dict[str, Any]]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, bundle: Bundle, record: dict[str, Any]) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        self._queue.put((bundle, record, future))
        return future

    def _collect(self) -> list[tuple[Bundle, dict[str, Any], Future[dict[str, Any]]]]:
        """Everything waiting now; with a window, also what arrives within it. With no window this is a
        group commit: records that arrive while a batch is being scored form the next batch, so a lone
        record never waits and batches grow with the load."""
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_records:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.window <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        last_log = time.monotonic()
        while True:
            batch = self._collect()
            groups: dict[tuple[str, int], list[tuple[Bundle, dict[str, Any], Future[dict[str, Any]]]]] = {}
            for item in batch:
                groups.setdefault((item[0].model, item[0].version), []).append(item)
            for (model, version), items in groups.items():
                self.stats.add(len(items))
                log.debug("scoring a batch of %d records for %s@%d", len(items), model, version)
                try:
                    results = self._score(items[0][0], [record for _, record, _ in items])
                except BaseException as exc:  # every waiting task must hear about it
                    for _, _, future in items:
                        future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(items, results, strict=True):
                    future.set_result(result)
            if time.monotonic() - last_log >= self._log_every:
                log.info("micro-batches: %s", self.stats.summary())
                last_log = time.monotonic()
