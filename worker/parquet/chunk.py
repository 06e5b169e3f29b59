"""A chunk's rows: read from the file, scored, and written as its part (which the merge reads back).

Memory follows the chunk size: a chunk reads only its rows (a slice of a big row group streams through it, not
all of the group at once). A chunk's part is written under a temporary name and renamed into place, so a chunk
scored twice replaces only its own part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batcomputer.files.storage import Location, commit
from batcomputer.files.tables import ERROR_CODE, ERROR_MESSAGE, LABEL, BadInput, validate_table
from batcomputer.models.bundle import Bundle
from batcomputer.models.scoring import score_table
from worker.parquet.guards import _Budget, _chunk_of, _first_line, _long_dictionaries, check_group, check_sizes
from worker.parquet.plan import Chunk, open_parquet

READ_BATCH_ROWS = 65_536
# Scores a chunk's clean rows: each output's probabilities, the labels, and the rows it left out
# (start, stop, code, message), whose outputs are then empty (see BatchRunner.score_table).
Guard = Callable[[Bundle, pa.Table], tuple[dict[str, Any], list[str], list[tuple[int, int, str, str]]]]


def read_chunk(location: Location, parquet: pq.ParquetFile, chunk: Chunk, columns: list[str], chunk_rows: int,
               threads: bool = True, field: str = "input_uri") -> pa.Table:
    """A chunk's rows, read from ``location`` (``parquet`` is it opened: its metadata; ``chunk_rows`` the
    configured chunk size, which size limits weigh, see ``_chunk_of``). ``threads``: let pyarrow
    decode columns on several threads (in one process that scores a whole file; a bulk worker's processes
    already keep every core busy, and threads there only contend).

    A slice of a row group streams: the rows before it are decoded and dropped batch by batch (pyarrow cannot
    seek into a row group), through a small buffer per column instead of the whole row group's bytes. What the
    rows take decoded is counted as they come (``_Budget``); text columns whose dictionaries could make a chunk
    too big decoded are read as dictionaries, and decoded only once they are known to fit. A chunk of several
    small row groups reads each whole, under the same checks, and joins them."""
    if chunk.groups > 1:
        parts = [read_chunk(location, parquet, Chunk(chunk.index, group, 0, parquet.metadata.row_group(group).num_rows),
                            columns, chunk_rows, threads, field)
                 for group in range(chunk.group, chunk.group + chunk.groups)]
        joined = pa.concat_tables(parts)
        if joined.num_rows != chunk.rows:
            raise BadInput(f"{field}: row groups {chunk.group} to {chunk.group + chunk.groups - 1} hold "
                           f"{joined.num_rows:,} rows, not the {chunk.rows:,} planned (a file replaced during the "
                           f"job)", field=field)
        return joined
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


def score_rows(bundle: Bundle, table: pa.Table, kept: list[str], guard: Guard | None = None) -> tuple[pa.Table, int]:
    """The output rows of a chunk: the kept input columns, one column per named output, the label, and the
    code and message of the rows that failed validation, or that ``guard`` left out (they hung or raised),
    their outputs empty. Returns it and the count of failed rows."""
    checked = validate_table(bundle.schema, table)
    valid = checked.valid
    clean = table if checked.failed == 0 else table.filter(pa.array(valid))
    if guard is None:
        named, labels = score_table(bundle, clean)
    else:
        named, labels, left_out = guard(bundle, clean)
        if left_out:
            positions = np.nonzero(valid)[0]
            valid = valid.copy()
            for start, stop, code, message in left_out:
                for row in positions[start:stop].tolist():
                    valid[row] = False
                    checked.codes[row], checked.messages[row] = code, message
            keep = np.ones(len(positions), dtype=bool)
            for start, stop, _, _ in left_out:
                keep[start:stop] = False
            named = {name: values[keep] for name, values in named.items()}
            labels = [label for label, kept_row in zip(labels, keep.tolist(), strict=True) if kept_row]
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
    return out, int(len(valid) - int(valid.sum()))


def explain_column(output: str, field: str) -> str:
    """The name of the output column holding ``field``'s contribution to ``output``'s probability."""
    return f"explain.{output}.{field}"


def explain_rows(bundle: Bundle, table: pa.Table, out: pa.Table,
                 explain: Callable[[Bundle, list[dict[str, Any]]], list[dict[str, Any]]] | None = None) -> pa.Table:
    """``out`` with one contribution column per output and field (``explain_column``), for the rows that were
    scored (rows with an error code get none). ``explain``: what computes the explanations (a bulk worker's
    explainer process), in this process by default."""
    from batcomputer.models.scoring import classes_of

    if explain is None:
        from batcomputer.models.explain import explain as explain_here

        explain = explain_here

    fields = bundle.schema.field_names
    scored = np.asarray(out.column(ERROR_CODE).is_null())
    positions = np.nonzero(scored)[0]
    records = table.select(fields).take(pa.array(positions)).to_pylist() if len(positions) else []
    explained = explain(bundle, records)
    outputs, _ = classes_of(bundle)
    for output in outputs:
        for name in fields:
            values = np.full(out.num_rows, np.nan)
            values[positions] = [e["contributions"][output][name] for e in explained]
            out = out.append_column(pa.field(explain_column(output, name), pa.float64()),
                                    pa.array(values, mask=~scored))
    return out


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
