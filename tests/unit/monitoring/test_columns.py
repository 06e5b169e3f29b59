"""The capture's rows on their way to Parquet: large calls copied at once, single records kept and copied
later, samples, warnings, client keys and owners, every row once and in order, whatever mix of calls."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from batcomputer.monitoring.capture import COMPACT_RECORDS, COPY_AT_ONCE, Capture

FIELDS = [types.SimpleNamespace(name="force", kind="categorical"), types.SimpleNamespace(name="month", kind="numeric")]
SCHEMA = types.SimpleNamespace(fields=FIELDS, field_names=["force", "month"])
BUNDLE = types.SimpleNamespace(model="crime", version=3, sha256="ab" * 32, schema=SCHEMA)


def scored(first: int, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = [{"force": f"force-{n % 5}", "month": float(n % 12)} for n in range(first, first + count)]
    results = [{"caught": n / 1e6, "notCaught": 1 - n / 1e6, "label": ("caught", "notCaught")[n % 2],
                "warnings": [{"field": "force", "code": "rare"}] if n % 7 == 0 else []}
               for n in range(first, first + count)]
    return records, results


def test_every_kept_row_comes_out_once_in_order_whatever_the_size_of_the_calls(tmp_path: Path) -> None:
    clock = iter(range(10**6)).__next__
    capture = Capture(str(tmp_path), clock=lambda: 1_800_000_000.0 + clock() / 1000)
    sizes = [1, COPY_AT_ONCE, 3, 256, 1, 1, COMPACT_RECORDS, 5, COPY_AT_ONCE - 1, 700]
    expected = []
    first = 0
    for number, size in enumerate(sizes):
        records, results = scored(first, size)
        ids = [f"call-{number}"] * size
        keys = [f"k{first + i}" if (first + i) % 3 == 0 else None for i in range(size)] if number % 2 else None
        owner = "alice.0123abcd" if number % 4 == 1 else ""
        assert capture.add(BUNDLE, ("job", "stream")[number % 2], ids, list(range(size)), records, results,
                           keys=keys, owner=owner) == size
        for i in range(size):
            expected.append((f"call-{number}", i, records[i]["force"], records[i]["month"], results[i]["caught"],
                             results[i]["label"], bool(results[i]["warnings"]), keys[i] if keys else None,
                             owner or None, ("job", "stream")[number % 2]))
        first += size
    # a sampled call keeps only what the sampler picked
    sampler = iter([0.0, 0.9, 0.0, 0.9] * 50).__next__
    capture.sample, capture.rates["batch"] = sampler, 0.5
    records, results = scored(first, 100)
    assert capture.add(BUNDLE, "batch", ["batch"] * 100, list(range(100)), records, results) == 50
    expected += [("batch", i, records[i]["force"], records[i]["month"], results[i]["caught"], results[i]["label"],
                  bool(results[i]["warnings"]), None, None, "batch") for i in range(0, 100, 2)]
    assert capture.flush(force=True) == len(expected) == capture.counts["written"]
    table = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    rows = sorted(table.to_pylist(), key=lambda row: row["at"])
    found = [(r["id"], r["index"], r["in_force"], r["in_month"], r["out_caught"], r["label"], r["warnings"] != "[]",
              r["key"], r["owner"], r["source"]) for r in rows]
    assert found == expected
    assert {r["sha256"] for r in rows} == {BUNDLE.sha256} and {r["version"] for r in rows} == {3}
    assert rows[0]["warnings"] == '[{"field":"force","code":"rare"}]'


def test_a_row_without_a_field_is_captured_with_a_null(tmp_path: Path) -> None:
    capture = Capture(str(tmp_path))
    records, results = scored(0, COPY_AT_ONCE)
    del records[5]["month"], results[7]["warnings"]
    capture.add(BUNDLE, "job", ["job"] * COPY_AT_ONCE, list(range(COPY_AT_ONCE)), records, results)
    assert capture.flush(force=True) == COPY_AT_ONCE
    rows = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table().to_pylist()
    assert rows[5]["in_month"] is None and rows[7]["warnings"] == "[]" and rows[6]["in_month"] == 6.0


def test_full_partitions_are_written_behind_the_scorer_and_a_stop_waits_for_them(tmp_path: Path) -> None:
    import threading

    capture = Capture(str(tmp_path), roll_bytes=1)  # every add fills its partition
    scorer = threading.get_ident()
    writers: set[int] = set()
    write = capture._write

    def watched(part: Any) -> Any:
        writers.add(threading.get_ident())
        return write(part)

    capture._write = watched  # type: ignore[method-assign]
    for n in range(20):
        records, results = scored(n * 100, 100)
        capture.add(BUNDLE, "stream", [f"e{n}"] * 100, list(range(100)), records, results)
    capture.flush(force=True)
    assert capture.counts["written"] == 2_000 and capture.counts["files"] == 20
    assert scorer not in writers  # no file was compressed on the scoring thread
    table = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert sorted(zip(table.column("id").to_pylist(), table.column("index").to_pylist(), strict=True)) == sorted(
        (f"e{n}", i) for n in range(20) for i in range(100))
