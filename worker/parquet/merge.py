"""The merge: a batch's output written whole from its parts, in input order, as one Parquet file.

The merge holds one part at a time; the output is written under a temporary name and committed whole, so a
merge done again replaces it. Its file metadata records the model and the job that made it (``describe``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batcomputer.files.storage import Location, commit_file
from batcomputer.models.bundle import Bundle
from worker.parquet.chunk import score_rows
from worker.parquet.plan import read_columns

METADATA_KEY = b"batcomputer"


def with_metadata(schema: pa.Schema, about: dict[str, Any]) -> pa.Schema:
    return schema.with_metadata({**(schema.metadata or {}), METADATA_KEY: orjson.dumps(about)})


def describe(bundle: Bundle, job_id: str) -> dict[str, Any]:
    """What the output's file metadata records about how it was made."""
    return {"model": bundle.schema.model, "version": bundle.version, "bundle_sha256": bundle.sha256, "job": job_id}


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
