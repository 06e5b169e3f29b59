"""Captured rows on their way to Arrow: what one ``Capture.add`` kept (``Call``), and rows gathered as one Python
list per column (``Columns``), converted to a table in one go.

pyarrow costs about 8 us per conversion call whatever its length, and a scorer's dicts cost twice as much to
read once they have left the cache (and keep the garbage collector busy while they are held), so: a large call
(a stream batch, a list job) is copied into the column lists at once, while its dicts are hot; single records
are kept as they came and copied together later; the lists become a table every few thousand rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

EMPTY_WARNINGS = "[]"


@dataclass(frozen=True)
class Call:
    """One ``add``: the scorer's own lists, kept as they are (no work per record on the scoring path)."""

    sha256: str
    source: str
    at: int  # milliseconds
    ids: list[str]
    indexes: list[int]
    records: list[dict[str, Any]]
    results: list[dict[str, Any]]
    keys: list[Any] | None
    keep: list[int] | None  # the sampled records' positions (None: all of them)
    owner: str = ""  # the API key whose work it is ('' for none: the local profile, streams)


class Columns:
    """Rows of one partition as a list per column; ``runs`` holds what is one value per call (sha256, source,
    time, owner) with its count, repeated in C when converted."""

    def __init__(self, schema: Any, outputs: list[str]) -> None:
        self.fields = [(spec.name, spec.kind == "categorical") for spec in schema.fields]
        self.outputs = list(outputs)
        self.ids: list[str] = []
        self.indexes: list[int] = []
        self.inputs: dict[str, list[Any]] = {name: [] for name, _ in self.fields}
        self.values: dict[str, list[Any]] = {name: [] for name in self.outputs}
        self.labels: list[Any] = []
        self.warnings: list[str] = []
        self.keys: list[str | None] = []
        self.runs: list[tuple[str, str, int, str | None, int]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, call: Call) -> None:
        """Copy the kept records of ``call`` into the lists."""
        if call.keep is None:
            ids, indexes, records, results, keys = call.ids, call.indexes, call.records, call.results, call.keys
        else:
            pick = call.keep
            ids, indexes = [call.ids[i] for i in pick], [call.indexes[i] for i in pick]
            records, results = [call.records[i] for i in pick], [call.results[i] for i in pick]
            keys = [call.keys[i] for i in pick] if call.keys is not None else None
        self.ids += ids
        self.indexes += indexes
        for name, values in self.inputs.items():
            values += values_of(records, name)
        for name, values in self.values.items():
            values += values_of(results, name)
        self.labels += values_of(results, "label")
        self.warnings += [orjson.dumps(w).decode() if w else EMPTY_WARNINGS
                          for w in (r.get("warnings") for r in results)]
        self.keys += [None if k is None else str(k) for k in keys] if keys is not None else [None] * len(ids)
        self.runs.append((call.sha256, call.source, call.at, call.owner or None, len(ids)))

    def table(self) -> Any:
        """The rows as one table of the capture's columns (``batcomputer.monitoring.capture``)."""
        import numpy as np
        import pyarrow as pa

        per_run = pa.array(np.repeat(np.arange(len(self.runs)), [run[4] for run in self.runs]))

        def repeated(position: int, kind: Any) -> Any:
            return pa.array([run[position] for run in self.runs], kind).take(per_run)

        return pa.table({
            "sha256": repeated(0, pa.string()), "source": repeated(1, pa.string()),
            "id": pa.array(self.ids, pa.string()), "index": pa.array(self.indexes, pa.int32()),
            "at": repeated(2, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            **{f"in_{name}": pa.array(self.inputs[name], pa.string() if categorical else pa.float64())
               for name, categorical in self.fields},
            **{f"out_{name}": pa.array(values, pa.float64()) for name, values in self.values.items()},
            "label": pa.array(self.labels, pa.string()),
            "warnings": pa.array(self.warnings, pa.string()),
            "key": pa.array(self.keys, pa.string()),
            "owner": repeated(3, pa.string()),
        })


def values_of(rows: list[dict[str, Any]], name: str) -> list[Any]:
    """``name``'s value in each row (None where a row lacks it), at C speed where every row has it."""
    try:
        return list(map(itemgetter(name), rows))
    except KeyError:
        return [row.get(name) for row in rows]
