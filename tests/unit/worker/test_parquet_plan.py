"""Planning a file into chunks: file order, row groups never split across chunks, small ones scored together,
counts balanced over the processes."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from worker.parquet.plan import Chunk, plan_chunks


def metadata(rows: int, row_group_size: int) -> pq.FileMetaData:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(rows))}), buffer, row_group_size=row_group_size)
    return pq.ParquetFile(io.BytesIO(buffer.getvalue())).metadata


def covered(chunks: list[Chunk], meta: pq.FileMetaData) -> list[tuple[int, int]]:
    """(row group, row) of every row the chunks read, in chunk order."""
    rows: list[tuple[int, int]] = []
    for c in chunks:
        if c.groups == 1:
            rows += [(c.group, c.skip + i) for i in range(c.rows)]
        else:  # whole row groups
            rows += [(g, i) for g in range(c.group, c.group + c.groups) for i in range(meta.row_group(g).num_rows)]
    return rows


def test_every_row_is_in_exactly_one_chunk_in_file_order() -> None:
    meta = metadata(10_007, 3_000)
    for processes in (1, 2, 3):
        chunks = plan_chunks(meta, 2_000, processes)
        expected = [(g, r) for g in range(meta.num_row_groups) for r in range(meta.row_group(g).num_rows)]
        assert covered(chunks, meta) == expected
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert all(c.rows > 0 for c in chunks)


def test_one_big_row_group_is_split_into_a_multiple_of_the_processes() -> None:
    meta = metadata(1_000, 1_000)
    assert len(plan_chunks(meta, 200, 1)) == 5
    balanced = plan_chunks(meta, 200, 2)
    assert len(balanced) == 6 and max(c.rows for c in balanced) - min(c.rows for c in balanced) <= 1
    assert len(plan_chunks(meta, 200, 64)) == 64  # few rows, many processes: every process gets a chunk
    assert len(plan_chunks(metadata(100_000, 100_000), 1_000, 2)) == 100  # plenty already: no rounding


def test_an_empty_file_has_no_chunks() -> None:
    assert plan_chunks(metadata(0, 10), 100, 2) == []


def test_thousands_of_tiny_row_groups_are_a_few_chunks_not_thousands_of_jobs() -> None:
    meta = metadata(5_000, 1)  # the probe's file: 5,000 one-row row groups
    chunks = plan_chunks(meta, 2_000, 2)
    assert len(chunks) == 3 and [c.rows for c in chunks] == [2_000, 2_000, 1_000]
    assert covered(chunks, meta) == [(g, 0) for g in range(5_000)]
    mixed = metadata(10_000, 3_000)  # 3,000 3,000 3,000 1,000: big groups stay on their own
    assert [c.groups for c in plan_chunks(mixed, 2_000, 1)] == [1, 1, 1, 1, 1, 1, 1]
