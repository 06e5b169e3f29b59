"""The Grafana dashboard in compose/ asks only for series Batcomputer exposes, and is a dashboard Grafana loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

from batcomputer import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "compose" / "grafana" / "batcomputer.json"


def exposed() -> set[str]:
    """Every sample name the gateway or a worker can expose."""
    names: set[str] = set()
    for constant in vars(metrics).values():
        if isinstance(constant, str) and constant.startswith("batcomputer_"):
            kind = metrics.HELP.get(constant, ("gauge", "", None))[0]
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}[kind]
            names.update(constant + suffix for suffix in suffixes)
    for counter in (metrics.JOBS_SUBMITTED, metrics.JOBS_ENDED):  # rendered as counters by the gateway
        names.add(counter + "_total")
    return names


def test_every_panel_queries_series_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "batcomputer" and dashboard["panels"]
    known = exposed()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"batcomputer_[a-z_]+", target["expr"]))
            assert used and used <= known, (panel["title"], used - known)
    covered = {name for panel in dashboard["panels"] for t in panel["targets"]
               for name in re.findall(r"batcomputer_[a-z_]+", t["expr"])}
    for needed in ("batcomputer_jobs_ended_total", "batcomputer_queue_depth", "batcomputer_queue_wait_seconds_bucket",
                   "batcomputer_end_to_end_seconds_bucket", "batcomputer_scoring_seconds_bucket",
                   "batcomputer_micro_batch_records_sum", "batcomputer_stream_backlog", "batcomputer_model_version",
                   "batcomputer_drift_psi", "batcomputer_live_quality", "batcomputer_holdout_quality",
                   "batcomputer_captured_records_total"):
        assert needed in covered
