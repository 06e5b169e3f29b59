"""Batch files on the worker: plan a Parquet file into chunks, score a chunk into its part, merge the parts.

Every step is a delivery of a leased job, so a lost worker's step is done again by another: a plan is
written once (see ``BatchStore.plan``); a chunk's part is written under a temporary name and renamed into
place, so a chunk scored twice replaces only its own part; the output is written whole from the parts in
input order and committed the same way. Memory follows the chunk size: a chunk reads only its rows (a slice of
a big row group streams through it, not all of the group at once), and the merge holds one part at a time.

A file is hostile until its footer has been checked: a footer that contradicts its own column chunks, claims
more rows than a batch may hold (see ``check_metadata``) or rows too wide for a chunk (``check_sizes``) fails
the batch at plan time, before any chunk job exists; a chunk that decodes to more than a chunk may hold (text
that compresses a thousandfold) or finds fewer rows than its row group claims fails itself, naming the row group.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batcomputer.errors import BatcomputerError
from batcomputer.files.storage import Location, Storage, commit, commit_file
from batcomputer.files.tables import ERROR_CODE, ERROR_MESSAGE, LABEL, BadInput, check_columns, validate_table
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.jobs import JobStore, Start
from batcomputer.jobqueue.keyspace import CANCELLED, FAILED, KIND_BATCH, QUEUE_BULK, RUNNING, SUCCEEDED, parent_of
from batcomputer.models.bundle import Bundle
from batcomputer.models.scoring import classes_of, score_table

log = logging.getLogger("batcomputer.chunks")
READ_BATCH_ROWS = 65_536
METADATA_KEY = b"batcomputer"
MAX_BATCH_ROWS = 1_000_000_000  # the most rows a batch file may claim (5,000 chunks at the shipped chunk size)
MAX_CHUNK_BYTES = 1 << 30  # the most a chunk's rows may take decoded, as the footer says and as they decode
STREAM_BUFFER_BYTES = 1 << 20  # per column, when a chunk streams a slice of its row group

Outcome = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Chunk:
    """Rows ``skip`` to ``skip + rows`` of row group ``group``: the slice of a file one chunk scores."""

    index: int
    group: int
    skip: int
    rows: int


def open_parquet(location: Location, field: str = "input_uri", metadata: pq.FileMetaData | None = None,
                 stream: bool = False, read_dictionary: list[str] | None = None) -> pq.ParquetFile:
    """The file's metadata, read now (or ``metadata``, read before); anything that is not a readable Parquet
    file is ``BadInput``. ``stream``: read column data through a small buffer per column, not by fetching the
    whole column chunks of a row group up front (pre-buffered, in few large reads: best for a whole row group)."""
    try:
        source: Any = location.path if location.local else location.fs.open(location.path, "rb")
        return pq.ParquetFile(source, metadata=metadata, pre_buffer=not stream,
                              buffer_size=STREAM_BUFFER_BYTES if stream else 0, read_dictionary=read_dictionary)
    except FileNotFoundError:
        raise BadInput(f"{field}: there is no file at {location.url!r}", field=field) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInput(f"{field}: {location.url!r} is not a readable Parquet file ({_first_line(exc)})",
                       field=field) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_group(metadata: pq.FileMetaData, group: int, field: str = "input_uri") -> None:
    """Refuse a row group that claims more rows than its column chunks hold values: every row has at least
    one value (a null, an empty list) in every column. A forged or damaged footer fails here, not as a read."""
    meta = metadata.row_group(group)
    rows = meta.num_rows
    if rows < 0:
        raise BadInput(f"{field}: row group {group} claims {rows:,} rows; the file's metadata is damaged",
                       field=field)
    for column in range(meta.num_columns):
        chunk = meta.column(column)
        if chunk.num_values < rows:
            raise BadInput(f"{field}: row group {group} claims {rows:,} rows but its column "
                           f"{chunk.path_in_schema!r} holds {chunk.num_values:,} values; the file's metadata does "
                           f"not match its data (a damaged or forged footer)", field=field)


def check_metadata(metadata: pq.FileMetaData, field: str = "input_uri") -> None:
    """Refuse, from the footer alone, a file whose metadata contradicts itself or that claims more rows than a
    batch may hold: before a single chunk job is made for rows that may not exist."""
    claimed = metadata.num_rows
    held = sum(metadata.row_group(group).num_rows for group in range(metadata.num_row_groups))
    if claimed != held:
        raise BadInput(f"{field}: the file's footer claims {claimed:,} rows and its row groups {held:,}; the "
                       f"file's metadata is damaged or forged", field=field)
    for group in range(metadata.num_row_groups):
        check_group(metadata, group, field)
    if claimed > MAX_BATCH_ROWS:
        raise BadInput(f"{field}: the file claims {claimed:,} rows, more than the {MAX_BATCH_ROWS:,} a batch may "
                       f"hold; split it into several files", field=field)


def _group_bytes(parquet: pq.ParquetFile, group: int, columns: list[str]) -> tuple[int, int]:
    """The uncompressed and compressed sizes of ``columns`` (their leaves) in row group ``group``."""
    wanted = set(columns)
    meta = parquet.metadata.row_group(group)
    uncompressed = compressed = 0
    for index, path in enumerate(parquet.reader.column_paths):
        if path[0] in wanted:
            chunk = meta.column(index)
            uncompressed += chunk.total_uncompressed_size
            compressed += chunk.total_compressed_size
    return uncompressed, compressed


def _chunk_of(group_rows: int, chunk_rows: int, planned: int = 0) -> int:
    """The rows a chunk of a row group holds at the configured chunk size (or as planned, when more): what a
    size limit weighs, so that a file is refused or not whatever the count of bulk processes (which the plan
    rounds to, making chunks smaller)."""
    return max(planned, min(group_rows, chunk_rows))


def check_sizes(parquet: pq.ParquetFile, columns: list[str], chunks: list[Chunk], chunk_rows: int,
                field: str = "input_uri") -> None:
    """Refuse row groups whose rows, the footer says, take more than a chunk may hold once decompressed (a
    column that compresses a thousandfold, rows of megabytes): a chunk's share of the group's ``columns``."""
    planned: dict[int, int] = {}
    for chunk in chunks:
        planned[chunk.group] = max(planned.get(chunk.group, 0), chunk.rows)
    for group, most in planned.items():
        rows = parquet.metadata.row_group(group).num_rows
        uncompressed, compressed = _group_bytes(parquet, group, columns)
        share = _chunk_of(rows, chunk_rows, most)
        estimate = uncompressed * share // max(rows, 1)
        if estimate > MAX_CHUNK_BYTES:
            raise BadInput(f"{field}: row group {group} holds {_size(uncompressed)} once decompressed "
                           f"({_size(compressed)} in the file) in {rows:,} rows; a chunk of {share:,} of them would "
                           f"take {_size(estimate)}, more than the {_size(MAX_CHUNK_BYTES)} a chunk may hold",
                           field=field)


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


def _text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind))


def _decoded_bytes(column: pa.ChunkedArray | pa.Array) -> int:
    """What a column takes decoded: a dictionary column as the values its indices repeat, which a few bytes of
    the file can make terabytes (one huge value, repeated), the others as they are."""
    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    total = 0
    for piece in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        if len(piece):
            lengths = pc.binary_length(piece.dictionary)
            total += int(pc.sum(pc.take(lengths, piece.indices)).as_py() or 0) + 8 * len(piece)
    return total


def _dictionary_encoded(chunk: Any) -> bool:
    """Whether a column chunk's metadata says it has dictionary pages (some writers leave the dictionary
    page's offset unset and only list the encoding)."""
    return bool(chunk.has_dictionary_page or any("DICTIONARY" in encoding for encoding in chunk.encodings))


def _long_dictionaries(location: Location, parquet: pq.ParquetFile, group: int, columns: list[str], rows: int,
                       field: str) -> list[str]:
    """The text columns of ``columns`` to read as dictionaries in row group ``group``: those whose dictionary
    holds values long enough that ``rows`` rows of them could decode to more than a chunk may hold. A few bytes
    of file can say "this 16 MiB value, in each of 100 rows"; its footer gives the dictionary's size once, and
    only the decoded rows tell the rest. Finding out reads each dictionary page and one row, not the column;
    reading a column as a dictionary costs more (and, across the rows before a slice, memory), so only the
    columns that need it are."""
    schema, paths, meta = parquet.schema_arrow, parquet.reader.column_paths, parquet.metadata.row_group(group)
    paged = [name for name in columns if _text(schema.field(name).type) and [name] in paths
             and _dictionary_encoded(meta.column(paths.index([name])))]
    if not paged:
        return []
    probe = open_parquet(location, field, parquet.metadata, stream=True, read_dictionary=paged)
    first = next(probe.iter_batches(batch_size=1, row_groups=[group], columns=paged, use_threads=False), None)
    worst: dict[str, int] = {}
    for name, column in zip(first.column_names, first.columns, strict=True) if first is not None else ():
        if pa.types.is_dictionary(column.type) and len(column.dictionary):
            worst[name] = int(pc.max(pc.binary_length(column.dictionary)).as_py() or 0) * rows
    total, chosen = sum(worst.values()), []
    for name in sorted(worst, key=lambda name: -worst[name]):
        if total <= MAX_CHUNK_BYTES // 2:  # the rest, decoded at once, stay well within a chunk
            break
        chosen.append(name)
        total -= worst[name]
    return chosen


class _Budget:
    """What a chunk's rows take decoded, counted before its dictionary columns are decoded: refused past
    ``MAX_CHUNK_BYTES`` as read, or as a chunk of ``share`` rows like them would take (as ``check_sizes``)."""

    def __init__(self, chunk: Chunk, share: int, field: str) -> None:
        self.chunk, self.share, self.field, self.used, self.rows = chunk, share, field, 0, 0
        self.by_column: dict[str, int] = {}

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        for name, column in zip(rows.column_names, rows.columns, strict=True):
            size = _decoded_bytes(column)
            self.used += size
            self.by_column[name] = self.by_column.get(name, 0) + size
        self.rows += rows.num_rows
        if self.used > MAX_CHUNK_BYTES:
            self._refuse(f"{self.rows:,} of the {self.chunk.rows:,} rows of chunk {self.chunk.index} take "
                         f"{_size(self.used)} decoded")

    def check(self) -> None:
        estimate = self.used * self.share // max(self.rows, 1)
        if estimate > MAX_CHUNK_BYTES:
            self._refuse(f"a chunk of {self.share:,} rows like the {self.rows:,} of chunk {self.chunk.index} "
                         f"would take {_size(estimate)} decoded")

    def _refuse(self, what: str) -> None:
        widest = max(self.by_column, key=lambda name: self.by_column[name])
        raise BadInput(f"{self.field}: row group {self.chunk.group} decodes to more than a chunk may hold: {what} "
                       f"(column {widest!r}: {_size(self.by_column[widest] / max(self.rows, 1))} a row), past the "
                       f"limit of {_size(MAX_CHUNK_BYTES)}", field=self.field)


def read_chunk(location: Location, parquet: pq.ParquetFile, chunk: Chunk, columns: list[str], chunk_rows: int,
               threads: bool = True, field: str = "input_uri") -> pa.Table:
    """A chunk's rows, read from ``location`` (``parquet`` is it opened: its metadata; ``chunk_rows`` the
    configured chunk size, which size limits weigh, see ``_chunk_of``). ``threads``: let pyarrow
    decode columns on several threads (in one process that scores a whole file; a bulk worker's processes
    already keep every core busy, and threads there only contend).

    A slice of a row group streams: the rows before it are decoded and dropped batch by batch (pyarrow cannot
    seek into a row group), through a small buffer per column instead of the whole row group's bytes. What the
    rows take decoded is counted as they come (``_Budget``); text columns whose dictionaries could make a chunk
    too big decoded are read as dictionaries, and decoded only once they are known to fit."""
    check_group(parquet.metadata, chunk.group, field)
    check_sizes(parquet, columns, [chunk], chunk_rows, field)
    group_rows = parquet.metadata.row_group(chunk.group).num_rows
    whole = chunk.skip == 0 and chunk.rows == group_rows
    share = _chunk_of(group_rows, chunk_rows, chunk.rows)
    schema = parquet.schema_arrow.empty_table().select(columns).schema
    budget = _Budget(chunk, share, field)
    try:
        batch_rows = group_rows if whole else min(READ_BATCH_ROWS, group_rows)
        texts = _long_dictionaries(location, parquet, chunk.group, columns, max(share, batch_rows), field)
        reader = open_parquet(location, field, parquet.metadata, stream=not whole, read_dictionary=texts or None)
        if whole:
            table = reader.read_row_group(chunk.group, columns=columns, use_threads=threads)
            budget.add(table)
            found = table.num_rows
        else:
            pieces, seen = [], 0
            for batch in reader.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[chunk.group],
                                             columns=columns, use_threads=threads):
                start, stop = max(chunk.skip - seen, 0), min(chunk.skip + chunk.rows - seen, batch.num_rows)
                if start < stop:
                    pieces.append(batch.slice(start, stop - start))
                    budget.add(pieces[-1])
                seen += batch.num_rows
                if seen >= chunk.skip + chunk.rows:
                    break
            table = pa.Table.from_batches(pieces, schema=reader.schema_arrow.empty_table().select(columns).schema)
            found = seen
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, MemoryError):
            raise
        raise BadInput(f"{field}: row group {chunk.group} cannot be read ({_first_line(exc)})", field=field) from None
    budget.check()
    if table.num_rows != chunk.rows:
        raise BadInput(f"{field}: row group {chunk.group} claims {group_rows:,} rows but its data holds {found:,} "
                       f"(chunk {chunk.index} wants its rows {chunk.skip:,} to {chunk.skip + chunk.rows - 1:,}); the "
                       f"file's metadata does not match its data (a damaged or forged footer, or a file replaced "
                       f"during the job)", field=field)
    return table.cast(schema) if texts else table


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
    check_metadata(parquet.metadata)
    columns = read_columns(bundle, parquet, kept)
    chunks = plan_chunks(parquet.metadata, chunk_rows)
    check_sizes(parquet, columns, chunks, chunk_rows)
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
        check_metadata(parquet.metadata)  # cheap, from the footer: before any chunk job exists
        chunks = plan_chunks(parquet.metadata, self.chunk_rows, self.batches.live_processes())
        check_sizes(parquet, read_columns(bundle, parquet, kept), chunks, self.chunk_rows)
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
        source = self.storage.confine(spec["input"], "input_uri")
        parquet = open_parquet(source)
        kept = spec["columns"]
        chunk = Chunk(spec["index"], spec["group"], spec["skip"], spec["rows"])
        if chunk.group >= parquet.metadata.num_row_groups:
            raise BadInput(f"input_uri: chunk {chunk.index} was planned in row group {chunk.group} and the file has "
                           f"{parquet.metadata.num_row_groups}; was it replaced during the job?", field="input_uri")
        table = read_chunk(source, parquet, chunk, read_columns(bundle, parquet, kept), self.chunk_rows, threads=False)
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
