"""The replay tool (bench/replay.py) against a live gateway and worker: real titanic records sampled with
their outcomes by `batcomputer data sample --outcomes`, replayed as jobs with every record drifted, and each
job's real outcome sent back, so the monitor would see both the drift and live quality."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import requests

from batcomputer.jobqueue.connection import redis_client
from batcomputer.monitoring.outcomes import OutcomeStore
from batcomputer.settings import Settings
from tests.conftest import ROOT, Services, run_cli, settings_env


def test_replay_sends_drifted_records_at_its_rate_and_their_real_outcomes(
        stack: tuple[str, Settings, Services], tmp_path: Path) -> None:
    base, settings, _ = stack
    sample = tmp_path / "titanic.parquet"
    sampled = run_cli(settings_env(settings), "data", "sample", "titanic", str(sample), "--rows", "500", "--outcomes")
    assert sampled.returncode == 0, sampled.stderr
    table = pq.read_table(sample)
    assert set(table.column("outcome").to_pylist()) == {"died", "survived"}  # the passengers' real fates
    store = OutcomeStore(redis_client(settings), settings.key_prefix)
    before = store.redis.hlen(store.keys.outcomes("titanic"))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "replay.py"), "titanic", str(sample), "--rate", "40",
                           "--seconds", "3", "--drift", "1", "--outcomes", "--url", base],
                          capture_output=True, text=True, timeout=120, check=True)
    summary = done.stderr.strip().splitlines()[-1]
    sent = int(summary.split(" records sent")[0].split("\r")[-1].replace(",", ""))
    # 40 records/s for 3 s, never more; fewer only where the machine could not keep up, and then it says so
    # (each job is waited for: four test processes on two cores once allowed 73)
    assert 1 <= sent <= 121, summary
    assert sent >= 80 or " behind the rate" in summary, summary
    assert f"({sent:,} drifted), {sent:,} outcomes sent" in summary
    kept = store.redis.hgetall(store.keys.outcomes("titanic"))
    assert len(kept) - before == sent
    # a drifted record sits at the top of each numeric field's allowed range, past what training saw: the
    # model's answer warns about it
    job_id = next(iter(kept)).decode().split("|")[0]
    result = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()["results"][0]
    assert {"age", "sibsp", "parch"} <= {warning["field"] for warning in result["warnings"]}, result
