"""A stream consumer: reads micro-batches of a model's input stream, scores them, writes outputs once.

Each pass reads up to ``count`` new entries (XREADGROUP, blocking up to a second), or, every few seconds,
claims entries a consumer presumed dead left pending longer than the claim idle time (XAUTOCLAIM). Each
entry's ``record`` is validated like a REST record; invalid records, and entries delivered more than the
attempt limit (they keep killing their consumer), go to the dead-letter stream with their reason. The rest
are scored in one vectorised call with the version ``production`` points to when the batch starts (a
promotion takes effect between batches, never inside one), and everything is written and acknowledged in
one script (``StreamStore.deliver``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import orjson
import redis

from batcomputer.errors import BatcomputerError, ModelError, TimedOut
from batcomputer.jobqueue.connection import redis_client
from batcomputer.jobqueue.keyspace import Keys
from batcomputer.jobqueue.streams import Entry, StreamStore, check_redis
from batcomputer.metrics import (
    MICRO_BATCH,
    MODEL_VERSION_SCORED,
    SCORING,
    STREAM_BATCH,
    STREAM_RECORDS,
    TIMEOUTS,
    Flusher,
    Recorder,
)
from batcomputer.models.registry import Registry
from batcomputer.models.schema import decode_one, validate_record
from batcomputer.models.scoring import score
from batcomputer.monitoring.capture import Capture
from batcomputer.settings import Settings
from worker.bundle_cache import BundleCache
from worker.explainer import Explainer
from worker.limits import Limits, Watchdog, failed_alike, settle, timed_out

log = logging.getLogger("batcomputer.streams")
CLAIM_EVERY_SECONDS = 5.0
TRIM_EVERY_SECONDS = 5.0


class StreamConsumer:
    def __init__(self, settings: Settings, model: str, name: str | None = None, node: str = "") -> None:
        self.settings = settings
        self.recorder = Recorder()
        self.node = node
        self.model = model
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.redis = redis_client(settings, socket_timeout=30)
        check_redis(self.redis)
        self.store = StreamStore(self.redis, settings.key_prefix, model, settings.stream_maxlen)
        self.registry = Registry.from_settings(settings)
        self.bundles = BundleCache(self.registry)
        self.stop = threading.Event()
        self.next_claim = time.monotonic()
        self.capture = Capture.from_settings(settings, self.recorder, self.redis)
        self.limits = Limits.from_settings(settings)
        self.watchdog = Watchdog(self.limits.grace)
        self.explainer = Explainer(settings)

    def run(self) -> None:
        self.store.ensure_group()
        log.info("consumer %s reading %s", self.name, self.store.input)
        keys = Keys(self.settings.key_prefix)
        node = keys.metrics(self.node) if self.node else None
        flusher = Flusher(self.recorder, self.redis, [keys.metrics(), *([node] if node else [])], node).start()
        try:
            self._consume()
        finally:
            self.explainer.close()
            if self.capture is not None:
                self.capture.flush(force=True)  # before the last metrics flush: what it writes or drops is counted
            flusher.stop()

    def _consume(self) -> None:
        next_trim = time.monotonic()
        window_start, window_count = time.monotonic(), 0
        failing = False
        while not self.stop.is_set():
            try:
                window_count += self.step()
                failing = False
                if self.capture is not None:
                    self.capture.flush(wait=False)  # what is old enough, written by the capture's own thread
            except Exception as exc:  # Redis away, a bundle unreadable: the entries stay pending; try again
                if not failing:
                    log.warning("consumer %s: %s; retrying", self.name, exc, exc_info=not isinstance(
                        exc, redis.RedisError))
                failing = True
                self.stop.wait(1.0)
                continue
            if time.monotonic() >= next_trim:
                try:
                    self.store.trim_input()
                    elapsed = time.monotonic() - window_start
                    self.store.record_rate(self.name, window_count / elapsed if elapsed > 0 else 0.0)
                except redis.RedisError:
                    pass
                window_start, window_count = time.monotonic(), 0
                next_trim = time.monotonic() + TRIM_EVERY_SECONDS

    def step(self) -> int:
        """One pass: claim entries left by lost consumers (every few seconds), else read new ones; score."""
        now = time.monotonic()
        entries: list[Entry] = []
        if now >= self.next_claim:
            entries = self.store.claim(self.name, int(self.settings.stream_claim_idle_seconds * 1000),
                                       self.settings.stream_batch)
            self.next_claim = now + CLAIM_EVERY_SECONDS
        if not entries:
            entries = self.store.read(self.name, self.settings.stream_batch, 1000)
        return self.handle(entries) if entries else 0

    def handle(self, entries: list[Entry]) -> int:
        """Score one micro-batch and write it; returns the outputs written."""
        version = self.registry.resolve(self.model, None, self.settings.default_alias)  # between batches only
        bundle = self.bundles.get(self.model, version)
        schema = bundle.schema
        valid: list[tuple[Entry, dict[str, Any]]] = []
        dead: list[tuple[str, dict[str, Any]]] = []
        for entry in entries:
            raw = entry.fields.get("record")
            if entry.deliveries > self.settings.max_attempts:
                dead.append(self.dead_letter(entry, "too_many_deliveries", f"delivered {entry.deliveries} times "
                                             f"without an outcome (limit {self.settings.max_attempts}); its "
                                             f"consumers were lost each time"))
                continue
            if raw is None:
                dead.append(self.dead_letter(entry, "missing", "the entry has no 'record' field"))
                continue
            fast = decode_one(schema, raw)
            if fast is not None:  # plainly valid: decoded and checked in one pass in C
                valid.append((entry, fast))
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                dead.append(self.dead_letter(entry, "bad_json", f"record is not valid JSON: {exc}"))
                continue
            if not isinstance(record, dict):
                dead.append(self.dead_letter(entry, "type", "record must be a JSON object of named fields"))
                continue
            clean, problems = validate_record(schema, record)
            if problems:
                dead.append(self.dead_letter(entry, problems[0]["code"], "; ".join(p["message"] for p in problems)))
                continue
            valid.append((entry, clean))
        outputs = []
        labels = (("model", self.model),)
        self.recorder.observe(STREAM_BATCH, labels, (len(entries),))
        if valid:
            began = time.perf_counter()
            valid, results = self.score_apart(bundle, valid, dead)
            self.recorder.observe(SCORING, labels, (time.perf_counter() - began,))
            if self.capture is not None:
                self.capture.add(bundle, "stream", [entry.id for entry, _ in valid], [0] * len(valid),
                                 [clean for _, clean in valid], results,
                                 keys=[entry.fields.get("key") or None for entry, _ in valid])
            self.recorder.observe(MICRO_BATCH, labels, (len(valid),))
            self.recorder.count(STREAM_RECORDS, (("model", self.model), ("outcome", "scored")), len(valid))
            self.recorder.set(MODEL_VERSION_SCORED, labels, bundle.version)
            explanations = self.explanations(bundle, valid)
            for (entry, _), result in zip(valid, results, strict=True):
                meta = {k: v for k, v in entry.fields.items() if k != "record"}
                warnings = result.get("warnings")  # the result stays whole: the capture reads it when it writes
                explained = explanations.get(entry.id)
                outputs.append((entry.id, {**meta, "in_id": entry.id, "model": self.model,
                                           "version": str(bundle.version),
                                           **{k: str(v) for k, v in result.items() if k != "warnings"},
                                           **({"warnings": orjson.dumps(warnings).decode()} if warnings else {}),
                                           **({"explanation": explained} if explained else {})}))
        if dead:
            self.recorder.count(STREAM_RECORDS, (("model", self.model), ("outcome", "dead")), len(dead))
        return self.store.deliver(outputs, dead)

    def explanations(self, bundle: Any, valid: list[tuple[Entry, dict[str, Any]]]) -> dict[str, str]:
        """The explanation (JSON) of each entry that asked for one (its ``explain`` field is true), all of them
        in one vectorised call; an entry whose explanation cannot be made gets ``{"error": ...}`` instead,
        and its output all the same."""
        asked = [(entry, clean) for entry, clean in valid
                 if entry.fields.get("explain", "").lower() in ("true", "1", "yes")]
        if not asked:
            return {}
        try:
            limit = self.limits.of("stream", bundle, explained=len(asked))
            found = self.watchdog.run(lambda: self.explainer.explain(bundle, [clean for _, clean in asked]), limit,
                                      f"explaining a stream micro-batch of {bundle.ref}")
        except BatcomputerError as exc:
            problem = orjson.dumps({"error": {"code": exc.code, "detail": exc.detail}}).decode()
            return {entry.id: problem for entry, _ in asked}
        return {entry.id: orjson.dumps(item).decode() for (entry, _), item in zip(asked, found, strict=True)}

    def score_apart(self, bundle: Any, valid: list[tuple[Entry, dict[str, Any]]],
                    dead: list[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[Entry, dict[str, Any]]], list[Any]]:
        """Score the valid entries under the stream's time limit; if that times out, again apart, and the
        entries that hang alone join ``dead`` (code ``timeout``). A model that raises on all of them raises
        (the entries stay pending and come again, up to the attempt limit)."""
        records = [clean for _, clean in valid]
        limit = self.limits.of("stream", bundle)
        pieces = settle(lambda a, b: score(bundle, records[a:b]), len(records), limit,
                        lambda rows: min(limit, self.limits.piece(rows)), self.watchdog,
                        f"a stream micro-batch of {bundle.ref}", lambda exc: ModelError(f"{type(exc).__name__}: {exc}"))
        alike = failed_alike(pieces)
        if alike is not None and not isinstance(alike, TimedOut):
            raise alike
        stopped = timed_out(pieces)
        if stopped:
            self.recorder.count(TIMEOUTS, (("model", self.model), ("queue", "stream")), stopped)
        kept: list[tuple[Entry, dict[str, Any]]] = []
        results: list[Any] = []
        for piece in pieces:
            if piece.result is not None:
                kept += valid[piece.start:piece.stop]
                results += piece.result
                continue
            assert piece.error is not None
            for entry, _ in valid[piece.start:piece.stop]:
                dead.append(self.dead_letter(entry, piece.error.code, piece.error.detail))
        return kept, results

    @staticmethod
    def dead_letter(entry: Entry, code: str, reason: str) -> tuple[str, dict[str, Any]]:
        return entry.id, {"in_id": entry.id, "code": code, "reason": reason, "record": entry.fields.get("record", ""),
                          "deliveries": str(entry.deliveries)}


def run_consumer(settings: Settings, model: str, node: str = "") -> None:
    """Consume until SIGTERM or SIGINT (the batch in hand is finished first)."""
    consumer = StreamConsumer(settings, model, node=node)
    stopping: list[bool] = []

    def stop(*_: Any) -> None:
        # A second SIGTERM (the group's and the supervisor's forward arrive together) can interrupt the first
        # handler inside Event.set, which holds the event's lock: calling it again would wait on that lock
        # forever. So only the first signal sets the event; the list append is one bytecode.
        if stopping:
            return
        stopping.append(True)
        consumer.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()
