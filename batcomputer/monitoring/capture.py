"""Capture of what production scores: every scored record (or a sample, per source) as Parquet rows under a
capture root, partitioned Hive-style by model, version and date, in files each process writes on its own.

A row: the bundle's sha256, the source (``job``, ``predict``, ``stream``, ``batch``), the job or entry id and
the record's index in it, when it was scored, each input field (``in_<field>``), each output (``out_<name>``),
the label, the warnings (as JSON), the client's key and the API key's id whose work it was (``owner``; null
without keys). Rows wait in memory per partition and are written as one file when the partition
holds ``roll_bytes`` (estimated) or its oldest row is ``roll_seconds`` old (``flush``, called by the process's
heartbeat); each file is committed whole (a temporary file renamed, or one PUT), so a killed process loses at
most what it had not written yet and never leaves a partial file. A root that cannot be written drops the rows
and counts them: scoring goes on.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from batcomputer.errors import ConfigurationError
from batcomputer.files.storage import Location, commit
from batcomputer.metrics import CAPTURED
from batcomputer.monitoring.columns import Call, Columns
from batcomputer.monitoring.outcomes import OutcomeStore, outcome_key
from batcomputer.monitoring.store import CaptureHealth
from batcomputer.settings import Settings

log = logging.getLogger("batcomputer.capture")
SOURCES = ("job", "predict", "stream", "batch")
COMPACT_RECORDS = 4_096  # rows a partition gathers before converting them to Arrow (``columns``)
COPY_AT_ONCE = 64  # an ``add`` this large is copied into the column lists at once, smaller ones later together
ROW_BYTES = 200  # an estimate of a captured row's size in memory beyond its values, for rolling files


@dataclass
class Partition:
    """Rows of one model version and day waiting to be written."""

    model: str
    version: int
    date: str
    schema: Any  # the model's Schema: which inputs, of which kind
    outputs: list[str]
    calls: list[Call] = field(default_factory=list)  # small ``add``s, kept as they came
    pending: int = 0  # records in ``calls``
    columns: Columns | None = None  # large ``add``s, copied into column lists at once
    tables: list[Any] = field(default_factory=list)  # converted, waiting to be written
    rows: int = 0
    bytes: int = 0
    since: float = 0.0


class Capture:
    """One process's capture writer. ``rates``: the fraction of records captured per source."""

    def __init__(self, root: str, options: dict[str, Any] | None = None, rates: dict[str, float] | None = None,
                 roll_bytes: int = 64 << 20, roll_seconds: float = 60.0, clock: Callable[[], float] = time.time,
                 sample: Callable[[], float] = random.random, recorder: Any = None, health: Any = None,
                 outcomes: Any = None) -> None:
        import fsspec

        self.fs, self.path = fsspec.core.url_to_fs(root, **(options or {}))
        self.root = root
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.rates = {source: 1.0 for source in SOURCES} | (rates or {})
        self.roll_bytes, self.roll_seconds = roll_bytes, roll_seconds
        self.clock, self.sample = clock, sample
        self.recorder = recorder  # batcomputer.metrics.Recorder: written and dropped, for /metrics
        self.health = health  # batcomputer.monitoring.store.CaptureHealth: a failing root, for /readyz
        self.outcomes = outcomes  # batcomputer.monitoring.outcomes.OutcomeStore: client keys of captured records
        self._failing = False  # whether the last write failed (then the health says so)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.counts = {"captured": 0, "written": 0, "dropped": 0, "files": 0}
        self._lock = threading.Lock()
        self._partitions: dict[tuple[str, int, str], Partition] = {}
        self._queue: queue.Queue[Partition] | None = None  # partitions for the writer thread (``flush(wait=False)``)

    @classmethod
    def from_settings(cls, settings: Settings, recorder: Any = None, client: Any = None) -> Capture | None:
        """The configured capture, or None when it is off (no ``BATCOMPUTER_CAPTURE_ROOT``); with ``client``
        (Redis), failing and recovered writes are reported for ``/readyz``."""
        if not settings.capture_root:
            return None
        try:
            rates = parse_rates(settings.capture_rates)
        except ValueError as exc:
            raise ConfigurationError(f"BATCOMPUTER_CAPTURE_RATES: {exc}") from None
        return cls(settings.capture_root, settings.capture_options, rates, settings.capture_roll_mb << 20,
                   settings.capture_roll_seconds, recorder=recorder,
                   health=CaptureHealth(client, settings.key_prefix) if client is not None else None,
                   outcomes=OutcomeStore(client, settings.key_prefix) if client is not None else None)

    def add(self, bundle: Any, source: str, ids: list[str], indexes: list[int], records: list[dict[str, Any]],
            results: list[dict[str, Any]], sampled: bool = False, keys: list[Any] | None = None,
            owner: str = "") -> int:
        """Capture scored records (their clean inputs and results), sampled at the source's rate unless the
        caller ``sampled`` them already; ``keys``: the client's key of each record (None where it sent none),
        by which ``owner`` (the API key whose work it is) may send the record's outcome. Returns how many
        were kept."""
        rate = 1.0 if sampled else self.rates.get(source, 1.0)
        if rate <= 0 or not records:
            return 0
        keep = range(len(records)) if rate >= 1 else [i for i in range(len(records)) if self.sample() < rate]
        if not keep:
            return 0
        now = self.clock()
        date = datetime.fromtimestamp(now, UTC).date().isoformat()
        kept = len(keep)
        call = Call(bundle.sha256, source, int(now * 1000), ids, indexes, records, results, keys,
                    None if kept == len(records) else list(keep), owner)
        with self._lock:
            key = (bundle.model, int(bundle.version), date)
            part = self._partitions.get(key)
            if part is None:
                outputs = [name for name in results[0] if name not in ("label", "warnings", "explanation")]
                part = self._partitions[key] = Partition(bundle.model, int(bundle.version), date, bundle.schema,
                                                         outputs, since=now)
            if kept >= COPY_AT_ONCE:  # its dicts are hot now, and none is left for the garbage collector to walk
                part.columns = part.columns or Columns(part.schema, part.outputs)
                part.columns.extend(call)
            else:
                part.calls.append(call)
                part.pending += kept
            if part.pending + (len(part.columns) if part.columns else 0) >= COMPACT_RECORDS:
                part.tables.append(converted(part))
            part.rows += kept
            part.bytes += kept * (ROW_BYTES + 16 * (len(bundle.schema.field_names) + len(part.outputs)))
            self.counts["captured"] += kept
            full = part.bytes >= self.roll_bytes
        if full:
            self.flush(only=key, wait=False)
        return len(keep)

    def flush(self, force: bool = False, only: tuple[str, int, str] | None = None, wait: bool = True) -> int:
        """Write every partition that is full or old enough (all of them with ``force``, after what the writer
        thread holds); returns rows written. Without ``wait`` they go to the capture's writer thread, so that
        the scoring thread never compresses a file (at most two wait for it: past that, the caller waits)."""
        now = self.clock()
        with self._lock:
            due = [key for key, part in self._partitions.items()
                   if force or key == only or part.bytes >= self.roll_bytes or now - part.since >= self.roll_seconds]
            taken = [self._partitions.pop(key) for key in due]
            if taken and not wait and not force and self._queue is None:
                self._queue = queue.Queue(maxsize=2)
                threading.Thread(target=self._write_behind, name="capture-writer", daemon=True).start()
        if not wait and not force:
            for part in taken:
                assert self._queue is not None
                self._queue.put(part)
            return 0
        if force and self._queue is not None:
            self._queue.join()  # what the writer holds is written first: a stop loses nothing
        return self._write_all(taken)

    def _write_behind(self) -> None:
        assert self._queue is not None
        while True:
            part = self._queue.get()
            try:
                self._write_all([part])
            finally:
                self._queue.task_done()

    def _write_all(self, taken: list[Partition]) -> int:
        written = 0
        for part in taken:
            try:
                table = self._write(part)
            except Exception as exc:  # the root is unwritable: drop and count, scoring goes on
                with self._lock:
                    self.counts["dropped"] += part.rows
                self._count("dropped", part.rows)
                log.warning("dropped %d captured records of %s@%d: %s: %s", part.rows, part.model, part.version,
                            type(exc).__name__, exc)
                self._report(part.rows, type(exc).__name__)
                continue
            self._report(0, None)
            self._index(part, table)
            written += part.rows
            with self._lock:
                self.counts["written"] += part.rows
                self.counts["files"] += 1
            self._count("written", part.rows)
        return written

    def _index(self, part: Partition, table: Any) -> None:
        """Tell the outcomes which captured record each client key names (``OutcomeStore.index``), in the
        index of the key's owner (a key sent by one tenant never names another's record): one round trip per
        written file that holds keys, never on the scoring path."""
        if self.outcomes is None or table.column("key").null_count == table.num_rows:
            return
        named: dict[str, dict[str, str]] = {}
        for key, id_, index, owner in zip(table.column("key").to_pylist(), table.column("id").to_pylist(),
                                          table.column("index").to_pylist(), table.column("owner").to_pylist(),
                                          strict=True):
            if key:
                named.setdefault(owner or "", {})[key] = outcome_key(id_, index)
        try:
            self.outcomes.index(part.model, named)
        except Exception as exc:  # outcomes by key wait for Redis; the file is written
            log.warning("could not index %d client key(s) of %s: %s", sum(map(len, named.values())), part.model,
                        exc)

    def _report(self, dropped: int, reason: str | None) -> None:
        """Tell the health a write failed, or worked after failures; a Redis away is not the capture's fault."""
        if self.health is None or (reason is None and not self._failing):
            return
        try:
            if reason is None:
                self.health.wrote(self.name)
            else:
                self.health.dropped(self.name, dropped, reason, self.clock())
            self._failing = reason is not None
        except Exception as exc:
            log.warning("could not report the capture's health: %s", exc)

    def _count(self, outcome: str, rows: int) -> None:
        if self.recorder is not None:
            self.recorder.count(CAPTURED, (("outcome", outcome),), float(rows))

    def _write(self, part: Partition) -> Any:
        """Write the partition's records as one Parquet file, committed whole; returns them as a table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables([*part.tables, *([converted(part)] if part.calls or part.columns else [])])
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        folder = f"{self.path.rstrip('/')}/model={part.model}/version={part.version}/date={part.date}"
        name = f"part-{self.name}-{int(part.since * 1000)}-{uuid.uuid4().hex[:6]}.parquet"
        commit(Location(f"{self.root}/{name}", self.fs, f"{folder}/{name}", self.local), buffer.getvalue())
        return table

    def expire(self, days: float) -> int:
        """Delete the date partitions older than ``days`` (retention); returns how many went."""
        cutoff = datetime.fromtimestamp(self.clock() - days * 86_400, UTC).date().isoformat()
        gone = 0
        for folder in self.fs.glob(f"{self.path.rstrip('/')}/model=*/version=*/date=*"):
            if folder.rsplit("date=", 1)[1] < cutoff:
                self.fs.rm(folder, recursive=True)
                gone += 1
        return gone

    def waiting(self) -> int:
        """Rows held in memory, not yet written."""
        with self._lock:
            return sum(part.rows for part in self._partitions.values())


def converted(part: Partition) -> Any:
    """The partition's gathered rows (small calls, then the column lists) as one table; it holds none after."""
    columns = part.columns or Columns(part.schema, part.outputs)
    for call in part.calls:
        columns.extend(call)
    part.calls, part.pending, part.columns = [], 0, None
    return columns.table()


def parse_rates(text: str) -> dict[str, float]:
    """``job=1,predict=1,stream=1,batch=0.01`` as a mapping (the setting ``BATCOMPUTER_CAPTURE_RATES``)."""
    rates = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, _, value = item.partition("=")
        if source not in SOURCES:
            raise ValueError(f"capture rates: {source!r} is not a source ({', '.join(SOURCES)})")
        rate = float(value)
        if not 0 <= rate <= 1:
            raise ValueError(f"capture rates: {source}={value} is not a fraction from 0 to 1")
        rates[source] = rate
    return rates
