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

from batcomputer.metrics import MICRO_BATCH, SCORING, Recorder
from batcomputer.models.bundle import Bundle

log = logging.getLogger("batcomputer.batcher")

# Scores records with a bundle and the options its jobs asked for (hashable: a time limit, explanations); a
# record's result may be the exception that left it out (it hung or raised alone), which its future then raises.
Score = Callable[[Bundle, list[dict[str, Any]], Any], list[Any]]
Item = tuple[Bundle, dict[str, Any], "Future[dict[str, Any]]", Any]


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
    """Collects single records from many task threads; scores what waits, up to ``max_records`` at a time.

    Its thread never leaves a record waiting: a batch that fails (or returns the wrong number of results)
    fails every record in it, and if the thread itself dies, the records it held fail with the reason and
    the next ``submit`` starts a new thread."""

    def __init__(self, score: Score, max_records: int, window_seconds: float, log_every: float = 10.0,
                 recorder: Recorder | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._score = score
        self.clock = clock  # seconds, for the window's deadline and the periodic summary (injected by tests)
        self.recorder = recorder
        self.max_records = max_records
        self.window = window_seconds
        self.stats = BatchStats()
        self.restarts = 0
        self._log_every = log_every
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = self._start_thread()

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        thread.start()
        return thread

    def submit(self, bundle: Bundle, record: dict[str, Any], options: Any = None) -> Future[dict[str, Any]]:
        """Queue a record; ``options``: what its job asked for besides scoring (records with different
        options are scored apart, each group with its own)."""
        future: Future[dict[str, Any]] = Future()
        if not self._thread.is_alive():
            with self._lock:
                if not self._thread.is_alive():
                    self.restarts += 1
                    log.error("the micro-batcher thread had died; starting a new one (restart %d)", self.restarts)
                    self._thread = self._start_thread()
        self._queue.put((bundle, record, future, options))
        return future

    def _collect(self) -> list[Item]:
        """Everything waiting now; with a window, also what arrives within it. With no window this is a
        group commit: records that arrive while a batch is being scored form the next batch, so a lone
        record never waits and batches grow with the load."""
        batch = [self._queue.get()]
        deadline = self.clock() + self.window
        while len(batch) < self.max_records:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - self.clock()
            if remaining <= 0 or self.window <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _score_group(self, items: list[Item]) -> None:
        started = time.perf_counter()
        results = self._score(items[0][0], [item[1] for item in items], items[0][3])
        if self.recorder is not None:
            labels = (("model", items[0][0].model),)
            self.recorder.observe(SCORING, labels, (time.perf_counter() - started,))
            self.recorder.observe(MICRO_BATCH, labels, (len(items),))
        if len(results) != len(items):
            raise RuntimeError(f"the model returned {len(results)} results for {len(items)} records")
        for item, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                item[2].set_exception(result)
            else:
                item[2].set_result(result)

    def _run(self) -> None:
        last_log = self.clock()
        batch: list[Item] = []
        try:
            while True:
                batch = self._collect()
                groups: dict[tuple[str, int, Any], list[Item]] = {}
                for item in batch:
                    groups.setdefault((item[0].model, item[0].version, item[3]), []).append(item)
                for (model, version, _), items in groups.items():
                    self.stats.add(len(items))
                    log.debug("scoring a batch of %d records for %s@%d", len(items), model, version)
                    try:
                        self._score_group(items)
                    except Exception as exc:  # every waiting task must hear about it
                        fail(items, exc)
                batch = []
                if self.clock() - last_log >= self._log_every:
                    log.info("micro-batches: %s", self.stats.summary())
                    last_log = self.clock()
        except BaseException as exc:  # the thread is dying: nothing it held may wait forever
            log.error("the micro-batcher thread died: %r", exc)
            fail(batch, RuntimeError(f"the micro-batcher stopped ({type(exc).__name__}); the job can be retried"))
            raise


def fail(items: list[Item], exc: BaseException) -> None:
    for _, _, future, _ in items:
        if not future.done():
            future.set_exception(exc)
