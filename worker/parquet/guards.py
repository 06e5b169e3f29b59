"""The limits a hostile Parquet file meets: its footer checked against itself, its rows weighed as they decode.

A file is hostile until its footer has been checked: a footer that contradicts its own column chunks, claims
more rows than a batch may hold (see ``check_metadata``) or rows too wide for a chunk (``check_sizes``) fails
the batch at plan time, before any chunk job exists; a chunk that decodes to more than a chunk may hold (text
that compresses a thousandfold) or finds fewer rows than its row group claims fails itself, naming the row group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batcomputer.files.storage import Location
from batcomputer.files.tables import BadInput

if TYPE_CHECKING:
    from worker.parquet.plan import Chunk

MAX_BATCH_ROWS = 1_000_000_000  # the most rows a batch file may claim (5,000 chunks at the shipped chunk size)
MAX_CHUNK_BYTES = 1 << 30  # the most a chunk's rows may take decoded, as the footer says and as they decode
STREAM_BUFFER_BYTES = 1 << 20  # per column, when a chunk streams a slice of its row group


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
    from worker.parquet.plan import open_parquet  # here, not at the top: plan imports this module

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
