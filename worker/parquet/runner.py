"""Batch files on the worker: plan a Parquet file into chunks, score a chunk into its part, merge the parts.

Every step is a delivery of a leased job, so a lost worker's step is done again by another: a plan is
written once (see ``BatchStore.plan``); a chunk's part is written under a temporary name and renamed into
place, so a chunk scored twice replaces only its own part; the output is written whole from the parts in
input order and committed the same way. ``score_file`` takes the same steps in this process, one after another.

The steps are the modules beside this one, which the worker (``BatchRunner``) and the command line
(``score_file``) share: ``plan`` (open, check and slice a file), ``chunk`` (read and score a chunk's rows, write
and read its part) and ``merge`` (the output, from the parts); ``guards`` holds the limits a hostile file meets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from batcomputer.errors import BatcomputerError, ModelError
from batcomputer.files.storage import Location, Storage
from batcomputer.files.tables import ERROR_CODE, LABEL, BadInput
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import CANCELLED, FAILED, KIND_BATCH, QUEUE_BULK, RUNNING, SUCCEEDED, parent_of
from batcomputer.jobqueue.records import Start
from batcomputer.metrics import TIMEOUTS
from batcomputer.models.bundle import Bundle
from batcomputer.models.scoring import classes_of, score_table
from worker.limits import Limits, Watchdog, failed_alike, settle, timed_out
from worker.parquet.chunk import Guard, explain_rows, read_chunk, read_part, score_rows, write_part
from worker.parquet.merge import describe, empty_output, write_output
from worker.parquet.plan import Chunk, check_file, open_parquet, plan_file, read_columns

log = logging.getLogger("batcomputer.chunks")
EXPLAIN_CHUNK_DIVISOR = 20  # an explained batch's chunks are this much smaller: each row costs a few thousand scored

Outcome = tuple[str, dict[str, Any]]


def score_file(bundle: Bundle, source: Location, target: Location, chunk_rows: int, wanted: list[str] | None,
               job_id: str = "local", progress: Any = None) -> tuple[int, int]:
    """Score a whole file in this process, chunk by chunk, into one output (``batcomputer score --local``):
    the same plan, checks and rows as through the workers. Returns (rows, failed rows)."""
    planned = plan_file(bundle, source, wanted, chunk_rows)
    parquet, kept, columns, chunks = planned.parquet, planned.kept, planned.columns, planned.chunks
    failed = 0

    def scored() -> Iterator[pa.Table]:
        nonlocal failed
        for chunk in chunks:
            out, bad = score_rows(bundle, read_chunk(source, parquet, chunk, columns, chunk_rows), kept)
            failed += bad
            if progress is not None:
                progress(out.num_rows)
            yield out

    rows = write_output(target, scored(), describe(bundle, job_id), lambda: empty_output(bundle, parquet, kept))
    return rows, failed


class BatchRunner:
    """The bulk worker's side of batches: what each delivery of a batch or a chunk does."""

    def __init__(self, jobs: JobStore, storage: Storage, bundles: Any, holder: str, chunk_rows: int,
                 file_ttl: float, capture: Any = None, limits: Limits | None = None,
                 watchdog: Watchdog | None = None, recorder: Any = None, explainer: Any = None) -> None:
        self.jobs = jobs
        self.explainer = explainer  # worker.explainer.Explainer, or None to explain in this process
        self.limits, self.watchdog, self.recorder = limits, watchdog, recorder
        self.capture = capture  # batcomputer.monitoring.capture.Capture, or None
        self.batches = BatchStore(jobs)
        self.storage = storage
        self.bundles = bundles
        self.holder = holder
        self.chunk_rows = chunk_rows
        self.file_ttl = file_ttl

    def run(self, job_id: str, start: Start) -> Outcome | None:
        """One delivery: plan a batch, score a chunk, or merge a batch. Returns the job's outcome, or None
        while a batch goes on (its chunks are out)."""
        spec: dict[str, Any] = start.records
        bundle = self.bundles.get(start.model, start.version)
        if spec.get("kind") == KIND_BATCH:
            if start.phase is None:
                return self.plan(job_id, bundle, spec)
            return self.merge(job_id, bundle, spec)
        return self.score(job_id, bundle, spec)

    def _state(self, job_id: str) -> str | None:
        return self.jobs.fields(job_id, "state")[0]

    def plan(self, batch_id: str, bundle: Bundle, spec: dict[str, Any]) -> Outcome | None:
        planned = plan_file(bundle, self.storage.confine(spec["input"], "input_uri"), spec.get("columns"),
                            self.rows_of(spec), self.batches.live_processes)
        parquet, kept, chunks = planned.parquet, planned.kept, planned.chunks
        key_column = spec.get("key_column")
        if key_column and key_column not in parquet.schema_arrow.names:
            raise BadInput(f"key_column: the file has no column {key_column!r}; it has "
                           f"{', '.join(parquet.schema_arrow.names)}", field="key_column")
        if not chunks:  # an empty file: an empty output, at once
            return self.merge(batch_id, bundle, spec)
        common = {"input": spec["input"], "parts": spec["parts"], "columns": kept,
                  **({"timeout": spec["timeout"]} if spec.get("timeout") else {}),
                  **({"explain": True} if spec.get("explain") else {}),
                  **({"key_column": key_column} if key_column else {})}
        ids = self.batches.plan(batch_id, self.holder, bundle.schema.model, bundle.version, bundle.sha256,
                                [(c.index, c.rows, {**common, "index": c.index, "group": c.group, "skip": c.skip,
                                                    "rows": c.rows, "groups": c.groups}) for c in chunks])
        if ids is None:
            log.warning("batch %s: another worker took over its plan", batch_id)
            return None
        lane = self.jobs.fields(batch_id, "lane")[0] or QUEUE_BULK  # the batch's key's lane
        self.jobs.publish([(lane, [chunk]) for chunk in ids])  # one message each: any worker takes any
        log.info("batch %s: %d rows in %d chunk(s)", batch_id, parquet.metadata.num_rows, len(chunks))
        return None

    def part(self, spec: dict[str, Any], index: int) -> Location:
        return self.storage.confine(f"{spec['parts'].rstrip('/')}/{index:06d}.arrow", "parts")

    def score(self, chunk_id: str, bundle: Bundle, spec: dict[str, Any]) -> Outcome:
        batch_id = parent_of(chunk_id) or ""
        if self._state(batch_id) != RUNNING:
            return CANCELLED, {}
        source = self.storage.confine(spec["input"], "input_uri")
        parquet = open_parquet(source)
        kept = spec["columns"]
        chunk = Chunk(spec["index"], spec["group"], spec["skip"], spec["rows"], spec.get("groups", 1))
        if chunk.group >= parquet.metadata.num_row_groups:
            raise BadInput(f"input_uri: chunk {chunk.index} was planned in row group {chunk.group} and the file has "
                           f"{parquet.metadata.num_row_groups}; was it replaced during the job?", field="input_uri")
        key_column = spec.get("key_column")
        read = read_columns(bundle, parquet, [*kept, *([key_column] if key_column else [])])
        table = read_chunk(source, parquet, chunk, read, self.rows_of(spec),
                           threads=False)
        out, failed = score_rows(bundle, table, kept, self.guard(f"chunk {chunk.index} of batch {batch_id}",
                                                                 spec.get("timeout")))
        if spec.get("explain"):
            out = self.explained(bundle, table, out, chunk.index, batch_id, spec.get("timeout"))
        location = self.part(spec, chunk.index)
        write_part(location, out)
        if self._state(batch_id) != RUNNING:  # cancelled meanwhile: the cancel's clean-up may have run already
            location.fs.rm(location.path)
            return CANCELLED, {}
        if self.capture is not None:
            first = sum(parquet.metadata.row_group(g).num_rows for g in range(chunk.group)) + chunk.skip
            owner = (self.jobs.fields(batch_id, "owner")[0] or "") if key_column else ""
            capture_rows(self.capture, bundle, batch_id, first, table, out, key_column, owner)
        return SUCCEEDED, {"rows_failed": str(failed)}

    def rows_of(self, spec: dict[str, Any]) -> int:
        """Rows per chunk of this batch: fewer when it is explained."""
        return max(1_000, self.chunk_rows // EXPLAIN_CHUNK_DIVISOR) if spec.get("explain") else self.chunk_rows

    def explained(self, bundle: Bundle, table: pa.Table, out: pa.Table, index: int, batch_id: str,
                  requested: float | None) -> pa.Table:
        """The chunk's output with its contribution columns, computed under the chunk's time limit."""
        explain = self.explainer.explain if self.explainer is not None else None
        if self.limits is None or self.watchdog is None:
            return explain_rows(bundle, table, out, explain)
        limit = self.limits.of("chunk", bundle, requested, rows=table.num_rows, explained=table.num_rows)
        return self.watchdog.run(lambda: explain_rows(bundle, table, out, explain), limit,
                                 f"explaining chunk {index} of batch {batch_id}")

    def guard(self, what: str, requested: float | None) -> Guard | None:
        """Scoring of a chunk's clean rows under its time limit: if that times out or raises, the rows are
        split until those that hang or raise alone are found, and only they are left out (code ``timeout`` or
        ``scoring_error``). A model that fails alike on every piece fails the chunk."""
        limits, watchdog = self.limits, self.watchdog
        if limits is None or watchdog is None:
            return None

        def run(bundle: Bundle, clean: pa.Table) -> tuple[dict[str, Any], list[str], list[tuple[int, int, str, str]]]:
            import numpy as np

            limit = limits.of("chunk", bundle, requested, rows=clean.num_rows)
            pieces = settle(lambda a, b: score_table(bundle, clean.slice(a, b - a)), clean.num_rows, limit,
                            lambda rows: min(limit, limits.piece(rows)), watchdog, f"scoring {what}",
                            lambda exc: ModelError(f"the model raised {type(exc).__name__}: "
                                                   f"{str(exc).splitlines()[0][:300] if str(exc) else ''}"))
            alike = failed_alike(pieces)
            if alike is not None and len(pieces) > 1:
                raise alike
            stopped = timed_out(pieces)
            if stopped and self.recorder is not None:
                self.recorder.count(TIMEOUTS, (("model", bundle.model), ("queue", QUEUE_BULK)), stopped)
            outputs, _ = classes_of(bundle)
            named: dict[str, list[Any]] = {name: [] for name in outputs}
            labels: list[str] = []
            left_out: list[tuple[int, int, str, str]] = []
            for piece in pieces:
                if piece.result is not None:
                    values, piece_labels = piece.result
                    for name in outputs:
                        named[name].append(values[name])
                    labels += piece_labels
                    continue
                assert piece.error is not None
                rows = piece.stop - piece.start
                for name in outputs:
                    named[name].append(np.full(rows, np.nan))
                labels += [""] * rows
                left_out.append((piece.start, piece.stop, piece.error.code, piece.error.detail))
            joined = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in named.items()}
            return joined, labels, left_out

        return run

    def merge(self, batch_id: str, bundle: Bundle, spec: dict[str, Any]) -> Outcome:
        failed_chunk, chunks_total = self.jobs.fields(batch_id, "failed_chunk", "chunks_total")
        total = int(chunks_total or 0)
        if failed_chunk:
            chunk = self.jobs.get(failed_chunk)
            self.batches.stop_chunks(batch_id, total)
            self.batches.discard(batch_id)
            error = dict(chunk.get("error") or {"code": chunk["state"], "detail": f"the chunk ended {chunk['state']}"})
            error["detail"] = f"chunk {chunk.get('index', '?')} of {total}: {error.get('detail', '')}"
            return FAILED, {"error": error}
        parquet = open_parquet(self.storage.confine(spec["input"], "input_uri"))
        output = self.storage.confine(spec["output"], "output_uri")
        parts = (read_part(self.part(spec, index)) for index in range(total))
        rows = write_output(output, parts, describe(bundle, batch_id),
                            lambda: empty_output(bundle, parquet, check_file(bundle, parquet, spec.get("columns"))))
        if rows != parquet.metadata.num_rows:
            raise BatcomputerError(f"the output has {rows} rows and the input {parquet.metadata.num_rows}")
        self.batches.expire_files([spec["parts"]], 0)
        if spec.get("owned"):
            self.batches.expire_files([spec["output"]], self.file_ttl)
        return SUCCEEDED, {"scoring_finished": str(self.jobs.clock()), **({} if total else {"rows_total": "0"})}

    def ended(self, batch_id: str) -> None:
        """A batch is final: its webhook, if it has one, is due now; unless it succeeded (whose merge scheduled
        its parts already), what it wrote is deleted at once, whatever failed (the plan, a chunk, the merge)."""
        state, callback = self.jobs.fields(batch_id, "state", "callback_url")
        if state != SUCCEEDED:
            self.batches.discard(batch_id)
        if callback:
            self.batches.schedule_webhook(batch_id)


def capture_rows(capture: Any, bundle: Bundle, batch_id: str, first: int, table: Any, out: Any,
                 key_column: str | None = None, owner: str = "") -> int:
    """Capture a sample of a chunk's scored rows (the ``batch`` rate): their inputs, outputs and label, each
    with its row number in the file (``first`` is the chunk's) and, with ``key_column``, the client's key of
    it (``?key_column=``), by which ``owner`` (the batch's API key) may send outcomes. Rows that failed
    validation are not captured."""
    import numpy as np

    rate = capture.rates.get("batch", 0.0)
    if rate <= 0 or table.num_rows == 0:
        return 0
    valid = np.asarray(out.column(ERROR_CODE).is_null())
    picks = np.nonzero(valid & (np.random.default_rng().random(table.num_rows) < rate))[0]
    if len(picks) == 0:
        return 0
    records = table.select(bundle.schema.field_names).take(picks).to_pylist()
    outputs, _ = classes_of(bundle)
    scored = out.select([*outputs, LABEL]).take(picks).to_pylist()
    results = [{**row, "warnings": []} for row in scored]
    keys = ([None if k is None else str(k) for k in table.column(key_column).take(picks).to_pylist()]
            if key_column else None)
    return int(capture.add(bundle, "batch", [batch_id] * len(picks), [first + int(i) for i in picks], records,
                           results, sampled=True, keys=keys, owner=owner))
