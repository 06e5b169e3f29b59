"""Planning a Parquet file: open it, refuse it if it cannot be scored, slice it into chunks.

``plan_file`` is the whole step, the same for ``score_file`` (in one process) and ``BatchRunner.plan`` (on the
bulk worker): a file whose columns, footer or rows' sizes say it cannot be scored (see ``guards``) is refused
here, before a single chunk is read or a chunk job exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batcomputer.files.storage import Location
from batcomputer.files.tables import ERROR_CODE, ERROR_MESSAGE, LABEL, BadInput, check_columns
from batcomputer.models.bundle import Bundle
from batcomputer.models.scoring import classes_of
from worker.parquet.guards import STREAM_BUFFER_BYTES, _first_line, check_metadata, check_sizes


@dataclass(frozen=True)
class Chunk:
    """Rows ``skip`` to ``skip + rows`` of row group ``group``: the slice of a file one chunk scores; or, with
    ``groups`` > 1, the whole of that many small row groups from ``group`` on."""

    index: int
    group: int
    skip: int
    rows: int
    groups: int = 1


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


TINY_FRACTION = 1_000  # a row group under chunk_rows / TINY_FRACTION rows is merged with its tiny neighbours


def plan_chunks(metadata: pq.FileMetaData, chunk_rows: int, processes: int = 1) -> list[Chunk]:
    """Slices of at most about ``chunk_rows`` rows, in file order, never across a row group (a chunk reads
    only the row group it lies in), except that runs of tiny row groups (under a thousandth of a chunk each,
    whose per-chunk costs would dwarf their scoring) are scored together, whole, as one chunk of up to
    ``chunk_rows``: a file of thousands of one-row groups is a few chunks, not thousands of jobs on the bulk
    queue. The count is rounded up to a multiple of the bulk processes alive, so that none
    of them idles through the last round (5 chunks on 2 processes take 3 rounds; 6 take 3 shorter ones)."""
    units: list[tuple[int, int, int]] = []  # (first row group, row groups, rows)
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if rows <= 0:
            continue
        last = units[-1] if units else None
        tiny = rows < max(2, chunk_rows // TINY_FRACTION)
        if (last is not None and tiny and last[2] + rows <= chunk_rows and last[0] + last[1] == group
                and (last[1] > 1 or last[2] < max(2, chunk_rows // TINY_FRACTION))):
            units[-1] = (last[0], last[1] + 1, last[2] + rows)
        else:
            units.append((group, 1, rows))
    total = sum(rows for _, _, rows in units)
    if not total:
        return []
    count = sum(max(1, round(rows / chunk_rows)) for _, _, rows in units)
    if processes > 1 and count < 8 * processes:
        count = -(-count // processes) * processes
    size = total / count
    chunks: list[Chunk] = []
    for group, groups, rows in units:
        if groups > 1:
            chunks.append(Chunk(len(chunks), group, 0, rows, groups))
            continue
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


def read_columns(bundle: Bundle, parquet: pq.ParquetFile, kept: list[str]) -> list[str]:
    """What to read: the kept columns and the model's fields, in file order."""
    wanted = set(kept) | set(bundle.schema.field_names)
    return [name for name in parquet.schema_arrow.names if name in wanted]


@dataclass(frozen=True)
class Plan:
    """A file opened, checked and sliced: what scoring it starts from, in this process or on the workers."""

    parquet: pq.ParquetFile
    kept: list[str]  # the input columns the output keeps
    columns: list[str]  # the columns a chunk reads: the kept ones and the model's fields, in file order
    chunks: list[Chunk]


def plan_file(bundle: Bundle, location: Location, wanted: list[str] | None, chunk_rows: int,
              processes: Callable[[], int] | None = None) -> Plan:
    """Open the file at ``location``, refuse it if it cannot be scored (its columns, its footer, its rows'
    sizes) and slice it into chunks of about ``chunk_rows`` rows; ``processes`` counts the bulk processes
    alive, which the chunks' count is rounded to (see ``plan_chunks``; one, when not given)."""
    parquet = open_parquet(location)
    kept = check_file(bundle, parquet, wanted)
    check_metadata(parquet.metadata)  # cheap, from the footer: before any chunk job exists
    columns = read_columns(bundle, parquet, kept)
    chunks = plan_chunks(parquet.metadata, chunk_rows, processes() if processes is not None else 1)
    check_sizes(parquet, columns, chunks, chunk_rows)
    return Plan(parquet, kept, columns, chunks)
