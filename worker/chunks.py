"""Batch files on the worker: plan a Parquet file into chunks, score a chunk into its part, merge the parts.

Every step is a delivery of a leased job, so a lost worker's step is done again by another: a plan is
written once (see ``BatchStore.plan``); a chunk's part is written under a temporary name and renamed into
place, so a chunk scored twice replaces only its own part; the output is written whole from the parts in
input order and committed the same way. Memory follows the chunk size: a chunk reads only its rows, and the
merge holds one part at a time.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batcomputer.batches import BatchStore
from batcomputer.bundle import Bundle
from batcomputer.errors import BatcomputerError
from batcomputer.jobs import JobStore, Start
from batcomputer.keyspace import CANCELLED, FAILED, KIND_BATCH, QUEUE_BULK, RUNNING, SUCCEEDED, parent_of
from batcomputer.scoring import classes_of, score_table
from batcomputer.storage import Location, Storage, commit, commit_file
from batcomputer.tables import ERROR_CODE, ERROR_MESSAGE, LABEL, BadInput, check_columns, validate_table

log = logging.getLogger("batcomputer.chunks")
READ_BATCH_ROWS = 65_536
METADATA_KEY = b"batcomputer"

Outcome = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Chunk:
    """Rows ``skip`` to ``skip + rows`` of row group ``group``: the slice of a file one chunk scores."""

    index: int
    group: int
    skip: int
    rows: int


def open_parquet(location: Location, field: str = "input_uri") -> pq.ParquetFile:
    """The file's metadata, read now; anything that is not a readable Parquet file is ``BadInput``."""
    try:
        source: Any = location.path if location.local else location.fs.open(location.path, "rb")
        return pq.ParquetFile(source)
    except FileNotFoundError:
        raise BadInput(f"{field}: there is no file at {location.url!r}", field=field) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInput(f"{field}: {location.url!r} is not a readable Parquet file ({_first_line(exc)})",
                       field=field) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def plan_chunks(metadata: pq.FileMetaData, chunk_rows: int, processes: int = 1) -> list[Chunk]:
    """Slices of at most about ``chunk_rows`` rows, in file order, never across a row group (a chunk reads
    only the row group it lies in). Their count is rounded up to a multiple of the bulk processes alive, so
    that none of them idles through the last round (5 chunks on 2 processes take 3 rounds; 6 take 3 shorter
    ones)."""
    groups = [(group, metadata.row_group(group).num_rows) for group in range(metadata.num_row_groups)]
    groups = [(group, rows) for group, rows in groups if rows > 0]
    total = sum(rows for _, rows in groups)
    if not total:
        return []
    count = sum(max(1, round(rows / chunk_rows)) for _, rows in groups)
    if processes > 1 and count < 8 * processes:
        count = -(-count // processes) * processes
    size = total / count
    chunks: list[Chunk] = []
    for group, rows in groups:
        pieces = max(1, min(rows, round(rows / size)))
        base, extra = divmod(rows, pieces)
        skip = 0
        for piece in range(pieces):
            length = base + (1 if piece < extra else 0)
            chunks.append(Chunk(len(chunks), group, skip, length))
            skip += length
    return chunks


def output_columns(schema: Any, bundle: Bundle, wanted: list[str] | None, arrow: pa.Schema) -> list[str]:
    """The input columns the output keeps (all, or ``wanted``), refusing names the file lacks and names
    the output columns would clash with."""
    names = list(arrow.names)
    if wanted is not None:
        unknown = [name for name in wanted if name not in names]
        if unknown:
            raise BadInput(f"columns: the file has no column(s) {', '.join(map(repr, unknown))}; it has "
                           f"{', '.join(names)}", field="columns")
        names = wanted
    outputs, _ = classes_of(bundle)
    clash = [name for name in names if name in {*outputs, LABEL, ERROR_CODE, ERROR_MESSAGE}]
    if clash:
        raise BadInput(f"columns: input column(s) {', '.join(map(repr, clash))} would clash with the output's "
                       f"columns; leave them out with ?columns=", field="columns")
    return names


def check_file(bundle: Bundle, parquet: pq.ParquetFile, wanted: list[str] | None) -> list[str]:
    """Refuse a file that cannot be scored before any row is: columns, types. Returns the kept columns."""
    check_columns(bundle.schema, parquet.schema_arrow)
    return output_columns(bundle.schema, bundle, wanted, parquet.schema_arrow)


def read_chunk(parquet: pq.ParquetFile, chunk: Chunk, columns: list[str], threads: bool = True) -> pa.Table:
    """A chunk's rows. ``threads``: let pyarrow decode columns on several threads (in one process that scores a
    whole file; a bulk worker's processes already keep every core busy, and threads there only contend)."""
    group_rows = parquet.metadata.row_group(chunk.group).num_rows
    if chunk.skip == 0 and chunk.rows == group_rows:
        return parquet.read_row_group(chunk.group, columns=columns, use_threads=threads)
    pieces, seen = [], 0
    for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[chunk.group], columns=columns,
                                      use_threads=threads):
        start, stop = max(chunk.skip - seen, 0), min(chunk.skip + chunk.rows - seen, batch.num_rows)
        if start < stop:
            pieces.append(batch.slice(start, stop - start))
        seen += batch.num_rows
        if seen >= chunk.skip + chunk.rows:
            break
    return pa.Table.from_batches(pieces, schema=parquet.schema_arrow.empty_table().select(columns).schema)


def read_columns(bundle: Bundle, parquet: pq.ParquetFile, kept: list[str]) -> list[str]:
    """What to read: the kept columns and the model's fields, in file order."""
    wanted = set(kept) | set(bundle.schema.field_names)
    return [name for name in parquet.schema_arrow.names if name in wanted]


def score_rows(bundle: Bundle, table: pa.Table, kept: list[str]) -> tuple[pa.Table, int]:
    """The output rows of a chunk: the kept input columns, one column per named output, the label, and the
    code and message of the rows that failed validation (their outputs empty). Returns it and the count of
    failed rows."""
    checked = validate_table(bundle.schema, table)
    valid = checked.valid
    clean = table if checked.failed == 0 else table.filter(pa.array(valid))
    named, labels = score_table(bundle, clean)
    rows = table.num_rows
    out = table.select(kept)
    positions = np.nonzero(valid)[0]
    for name, values in named.items():
        full = np.full(rows, np.nan)
        full[positions] = values
        out = out.append_column(pa.field(name, pa.float64()), pa.array(full, mask=~valid))
    label = np.full(rows, None, dtype=object)
    label[positions] = labels
    out = out.append_column(pa.field(LABEL, pa.string()), pa.array(label, type=pa.string()))
    out = out.append_column(pa.field(ERROR_CODE, pa.string()), pa.array(checked.codes, type=pa.string()))
    out = out.append_column(pa.field(ERROR_MESSAGE, pa.string()), pa.array(checked.messages, type=pa.string()))
    return out, checked.failed


def with_metadata(schema: pa.Schema, about: dict[str, Any]) -> pa.Schema:
    return schema.with_metadata({**(schema.metadata or {}), METADATA_KEY: orjson.dumps(about)})


def describe(bundle: Bundle, job_id: str) -> dict[str, Any]:
    """What the output's file metadata records about how it was made."""
    return {"model": bundle.schema.model, "version": bundle.version, "bundle_sha256": bundle.sha256, "job": job_id}


def write_part(location: Location, table: pa.Table) -> None:
    """A chunk's rows as an Arrow IPC file (LZ4): cheap to write here and to read back in the merge, which
    encodes Parquet once, for the whole output."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    commit(location, sink.getvalue().to_pybytes())


def read_part(location: Location) -> pa.Table:
    if location.local:
        with pa.memory_map(location.path) as source:
            return pa.ipc.open_file(source).read_all()
    with location.fs.open(location.path, "rb") as handle:
        return pa.ipc.open_file(pa.BufferReader(handle.read())).read_all()


def empty_output(bundle: Bundle, parquet: pq.ParquetFile, kept: list[str]) -> pa.Schema:
    """The output's columns for a file with no rows."""
    empty, _ = score_rows(bundle, parquet.schema_arrow.empty_table().select(read_columns(bundle, parquet, kept)), kept)
    return empty.schema


def write_output(target: Location, tables: Iterable[pa.Table], about: dict[str, Any],
                 empty: Callable[[], pa.Schema]) -> int:
    """Write ``tables``, in order, as one Parquet file at ``target``, committed whole (``empty()`` gives the
    columns when there are none). Returns its rows."""
    folder = os.path.dirname(target.path) if target.local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".output-", suffix=".parquet", dir=folder)
    os.close(fd)
    rows = 0
    try:
        writer: pq.ParquetWriter | None = None
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(temporary, with_metadata(table.schema, about))
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            rows += table.num_rows
        if writer is None:
            writer = pq.ParquetWriter(temporary, with_metadata(empty(), about))
        writer.close()
        commit_file(target, temporary)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return rows


def score_file(bundle: Bundle, source: Location, target: Location, chunk_rows: int, wanted: list[str] | None,
               job_id: str = "local", progress: Any = None) -> tuple[int, int]:
    """Score a whole file in this process, chunk by chunk, into one output (``batcomputer score --local``):
    the same plan, checks and rows as through the workers. Returns (rows, failed rows)."""
    parquet = open_parquet(source)
    kept = check_file(bundle, parquet, wanted)
    columns = read_columns(bundle, parquet, kept)
    failed = 0

    def scored() -> Iterator[pa.Table]:
        nonlocal failed
        for chunk in plan_chunks(parquet.metadata, chunk_rows):
            out, bad = score_rows(bundle, read_chunk(parquet, chunk, columns), kept)
            failed += bad
            if progress is not None:
                progress(out.num_rows)
            yield out

    rows = write_output(target, scored(), describe(bundle, job_id), lambda: empty_output(bundle, parquet, kept))
    return rows, failed


class BatchRunner:
    """The bulk worker's side of batches: what each delivery of a batch or a chunk does."""

    def __init__(self, jobs: JobStore, storage: Storage, bundles: Any, holder: str, chunk_rows: int,
                 file_ttl: float) -> None:
        self.jobs = jobs
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
        state = self.jobs.redis.hget(self.jobs.keys.job(job_id), "state")
        return state.decode() if state else None

    def plan(self, batch_id: str, bundle: Bundle, spec: dict[str, Any]) -> Outcome | None:
        parquet = open_parquet(self.storage.confine(spec["input"], "input_uri"))
        kept = check_file(bundle, parquet, spec.get("columns"))
        chunks = plan_chunks(parquet.metadata, self.chunk_rows, self.batches.live_processes())
        if not chunks:  # an empty file: an empty output, at once
            return self.merge(batch_id, bundle, spec)
        common = {"input": spec["input"], "parts": spec["parts"], "columns": kept}
        ids = self.batches.plan(batch_id, self.holder, bundle.schema.model, bundle.version, bundle.sha256,
                                [(c.index, c.rows, {**common, "index": c.index, "group": c.group, "skip": c.skip,
                                                    "rows": c.rows}) for c in chunks])
        if ids is None:
            log.warning("batch %s: another worker took over its plan", batch_id)
            return None
        self.jobs.publish([(QUEUE_BULK, [chunk]) for chunk in ids])  # one message each: any worker takes any
        log.info("batch %s: %d rows in %d chunk(s)", batch_id, parquet.metadata.num_rows, len(chunks))
        return None

    def part(self, spec: dict[str, Any], index: int) -> Location:
        return self.storage.confine(f"{spec['parts'].rstrip('/')}/{index:06d}.arrow", "parts")

    def score(self, chunk_id: str, bundle: Bundle, spec: dict[str, Any]) -> Outcome:
        batch_id = parent_of(chunk_id) or ""
        if self._state(batch_id) != RUNNING:
            return CANCELLED, {}
        parquet = open_parquet(self.storage.confine(spec["input"], "input_uri"))
        kept = spec["columns"]
        chunk = Chunk(spec["index"], spec["group"], spec["skip"], spec["rows"])
        table = read_chunk(parquet, chunk, read_columns(bundle, parquet, kept), threads=False)
        if table.num_rows != chunk.rows:
            raise BadInput(f"input_uri: chunk {chunk.index} expected {chunk.rows} rows of row group {chunk.group} "
                           f"and found {table.num_rows}; was the file replaced during the job?", field="input_uri")
        out, failed = score_rows(bundle, table, kept)
        location = self.part(spec, chunk.index)
        write_part(location, out)
        if self._state(batch_id) != RUNNING:  # cancelled meanwhile: the cancel's clean-up may have run already
            location.fs.rm(location.path)
            return CANCELLED, {}
        return SUCCEEDED, {"rows_failed": str(failed)}

    def merge(self, batch_id: str, bundle: Bundle, spec: dict[str, Any]) -> Outcome:
        failed_chunk, total = self.jobs.redis.hmget(self.jobs.keys.job(batch_id), "failed_chunk", "chunks_total")
        total = int(total or 0)
        if failed_chunk:
            chunk = self.jobs.get(failed_chunk.decode())
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
        """A batch is final: its webhook, if it has one, is due now."""
        if self.jobs.redis.hget(self.jobs.keys.job(batch_id), "callback_url"):
            self.batches.schedule_webhook(batch_id)
