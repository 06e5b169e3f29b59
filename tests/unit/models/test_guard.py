"""The guards' judgement: figures read from the cluster's metrics, no verdict on too few jobs, each guard
tripping on its own signal past its margin, and a quiet new version passing."""

from __future__ import annotations

from typing import Any

from batcomputer.metrics import JOBS_SCORED, RECORD_WARNINGS, RECORDS_SCORED, series
from batcomputer.models.guard import Limits, judge, signals, since


def counts(version: int, succeeded: float, failed: float, labels: dict[str, float], warned: float) -> dict[str, float]:
    v = ("version", str(version))
    fields = {series(JOBS_SCORED, (("model", "crime"), ("state", "succeeded"), v), "value"): succeeded,
              series(JOBS_SCORED, (("model", "crime"), ("state", "failed"), v), "value"): failed,
              series(RECORD_WARNINGS, (("model", "crime"), v), "value"): warned,
              series(JOBS_SCORED, (("model", "titanic"), ("state", "failed"), v), "value"): 99}
    for label, count in labels.items():
        fields[series(RECORDS_SCORED, (("label", label), ("model", "crime"), v), "value")] = count
    return fields


def verdict(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    return judge(old, new, Limits())[1]


def test_signals_are_one_versions_counts_of_one_model() -> None:
    fields = {**counts(1, 90, 10, {"caught": 60, "notCaught": 40}, 5), **counts(2, 3, 0, {"caught": 3}, 0)}
    assert signals(fields, "crime", 1) == {"succeeded": 90, "failed": 10, "records": 100, "warned": 5,
                                           "labels": {"caught": 60, "notCaught": 40}}
    later = signals({**fields, **counts(2, 13, 1, {"caught": 9, "notCaught": 4}, 2)}, "crime", 2)
    assert since(later, signals(fields, "crime", 2)) == {"succeeded": 10, "failed": 1, "records": 10, "warned": 2,
                                                         "labels": {"caught": 6, "notCaught": 4}}


def test_each_guard_trips_on_its_own_signal_and_only_past_its_margin() -> None:
    old = signals(counts(1, 950, 50, {"caught": 600, "notCaught": 400}, 100), "crime", 1)  # 5% fail, 10% warn
    quiet = signals(counts(2, 95, 5, {"caught": 62, "notCaught": 38}, 12), "crime", 2)
    assert verdict(old, quiet) is None
    failing = signals(counts(2, 85, 15, {"caught": 55, "notCaught": 30}, 8), "crime", 2)  # 15% > 5% + 5%
    assert "failure_rate 0.150 > 0.100" in (verdict(old, failing) or "")
    warning = signals(counts(2, 100, 0, {"caught": 60, "notCaught": 40}, 25), "crime", 2)  # 25% > 10% + 10%
    assert (verdict(old, warning) or "").startswith("warning_rate")
    one_class = signals(counts(2, 100, 0, {"caught": 100}, 10), "crime", 2)
    assert (verdict(old, one_class) or "").startswith("label_mix_psi")
    too_few = signals(counts(2, 10, 9, {"caught": 10}, 9), "crime", 2)  # 19 jobs: no verdict yet
    assert verdict(old, too_few) is None
