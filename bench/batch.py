"""Benchmark of Parquet batches: a realistic crime file scored through the API by the bulk worker as
shipped (one process per core), beside the same rows scored in one process.

Run with `.venv/bin/python bench/batch.py [--rows N]` (never part of `make test`). It generates a crime file
(the real crime data's categories and months, ~20% of districts missing, an id column passed through) of
N rows (default 1,000,000) and of 5N rows, and for each size reports:

* baseline: one process reads the file, calls the pipeline's ``predict_proba`` on it as a DataFrame and
  writes the probabilities beside the input (what a data scientist writes by hand);
* in-process chunks: ``batcomputer score --local``'s code in one process (the same validation, columnar
  encoding and output as the workers, without Redis);
* through the API: upload, plan, chunks scored by the bulk worker's processes, merge, until the job has
  succeeded (rows/s counted over all of it), with the peak RSS of each of the worker's processes, measured
  on a fresh worker for each size.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batcomputer.files.client import Client  # noqa: E402
from batcomputer.models.registry import Registry  # noqa: E402
from batcomputer.settings import Settings, per_core  # noqa: E402
from cli.launchers.redis_server import free_port, start_redis_server  # noqa: E402

BASELINE = """
import sys, time
import pyarrow as pa, pyarrow.parquet as pq
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
bundle = Registry.from_settings(Settings.from_env()).bundle("crime", None, pipeline=True)
start = time.perf_counter()
table = pq.read_table(sys.argv[1])
frame = table.select(bundle.schema.field_names).to_pandas()
probabilities = bundle.pipeline.predict_proba(frame)
for index, name in enumerate(bundle.schema.outputs):
    table = table.append_column(name, pa.array(probabilities[:, index]))
pq.write_table(table, sys.argv[2])
print(time.perf_counter() - start)
"""

LOCAL = """
import sys, time
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from batcomputer.files.storage import local_location
from worker.parquet.runner import score_file
settings = Settings.from_env()
bundle = Registry.from_settings(settings).bundle("crime", None, pipeline=True)
start = time.perf_counter()
score_file(bundle, local_location(sys.argv[1]), local_location(sys.argv[2]), settings.batch_chunk_rows, None)
print(time.perf_counter() - start)
"""


def crime_file(settings: Settings, rows: int, path: Path) -> None:
    """A crime file of ``rows`` rows drawn from the real data's rows (so categories come in their real
    proportions), written as pandas users write Parquet (pyarrow's default row groups)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.datasets import load_dataset
    from training.features import build_table
    from training.spec import load_spec

    spec = load_spec("crime")
    raw, _ = load_dataset("crime", Path(settings.data_dir))
    real, _, _ = build_table(spec, spec.sources["police"], raw)
    rng = np.random.default_rng(5)
    picked = real.iloc[rng.integers(0, len(real), rows)].reset_index(drop=True)
    table = pa.table({"crime_id": pa.array(np.char.add("c", np.arange(rows).astype(str))),
                      "force": pa.array(picked["force"].astype(str).to_numpy()),
                      "crime": pa.array(picked["crime"].astype(str).to_numpy()),
                      "month": pa.array(picked["month"].astype("int64").to_numpy()),
                      "district": pa.array(picked["district"].where(picked["district"].notna(), None).to_numpy(),
                                           type=pa.string())})
    pq.write_table(table, path)


def run_script(script: str, env: dict[str, str], *args: str) -> float:
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def peak_rss(process: psutil.Process) -> dict[int, float]:
    """VmHWM (peak resident set) in MB of a process and each of its descendants, by pid."""
    found = {}
    for each in [process, *process.children(recursive=True)]:
        try:
            status = Path(f"/proc/{each.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                found[each.pid] = int(line.split()[1]) / 1024
    return found


def phases(client: Client, job: dict[str, Any], began: float) -> dict[str, float]:
    """The batch's timeline from its chunk jobs' timestamps."""
    from datetime import datetime

    def seconds(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    chunks = [client.job(f"{job['id']}.{index}") for index in range(job["chunks_total"])]
    starts = [seconds(c["started"]) for c in chunks]
    ends = [seconds(c["finished"]) for c in chunks]
    created = seconds(job["created"])
    busy = sum(e - s for s, e in zip(starts, ends, strict=True))
    span = max(ends) - min(starts)
    processes = per_core(Settings.from_env().worker_concurrency)
    return {"upload": created - began, "plan": min(starts) - created, "chunks": span,
            "busy": busy / (span * processes), "merge": seconds(job["finished"]) - max(ends)}


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=5, help="the second file has this many times the rows")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base_settings = Settings.from_env()
    if "crime" not in Registry.from_settings(base_settings).models():
        from training.trainer import train

        train(base_settings, "crime", promote=True)
    folder = Path(tempfile.mkdtemp(prefix="batcomputer-batch-bench-"))
    redis = start_redis_server(folder / "redis")
    env = {**os.environ, "BATCOMPUTER_REDIS_URL": redis.url, "BATCOMPUTER_KEY_PREFIX": "bench:",
           "BATCOMPUTER_REGISTRY": str(Path(base_settings.registry).resolve()),
           "BATCOMPUTER_STORAGE_ROOTS": str(folder / "batches"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cli = str(Path(sys.executable).parent / "batcomputer")
    log = (folder / "services.log").open("ab")
    started: list[subprocess.Popen[bytes]] = []

    def start(command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        started.append(process)
        return process

    def stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

    port = free_port()
    results: list[dict[str, Any]] = []
    try:
        start([cli, "api", "--port", str(port)])
        gateway = f"http://127.0.0.1:{port}"
        wait_http(f"{gateway}/healthz")
        client = Client(gateway, timeout=600)
        processes = per_core(base_settings.worker_concurrency)
        print(f"crime model; {os.cpu_count()} cores; bulk worker as shipped: {processes} processes, chunks of "
              f"{base_settings.batch_chunk_rows:,} rows\n")
        for rows in (args.rows, args.rows * args.scale):
            source = folder / f"crime-{rows}.parquet"
            crime_file(base_settings, rows, source)
            baseline = run_script(BASELINE, env, str(source), str(folder / "baseline-out.parquet"))
            local = run_script(LOCAL, env, str(source), str(folder / "local-out.parquet"))
            worker = start([cli, "worker", "--queues", "bulk", "--loglevel", "WARNING"])
            supervisor = psutil.Process(worker.pid)
            deadline = time.monotonic() + 60
            while len(supervisor.children(recursive=True)) < 1 + processes and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # the pool's children load the model (warm) before the clock starts
            began, wall = time.perf_counter(), time.time()
            job = client.submit_file("crime", source)
            job = client.follow(job["id"], poll=0.5)
            elapsed = time.perf_counter() - began
            if job["state"] != "succeeded":
                sys.exit(f"the batch ended {job['state']}: {job.get('error')}")
            rss = peak_rss(supervisor)
            timeline = phases(client, job, wall)
            stop(worker)
            results.append({"rows": rows, "baseline": baseline, "local": local, "api": elapsed, "rss": rss,
                            "chunks": job["chunks_total"], "timeline": timeline})
            source.unlink()
        print(f"{'rows':>10}{'baseline s':>12}{'rows/s':>11}{'in-process s':>14}{'rows/s':>11}{'API s':>8}"
              f"{'rows/s':>11}{'x baseline':>12}{'x in-process':>14}")
        for r in results:
            print(f"{r['rows']:>10,}{r['baseline']:>12.2f}{r['rows'] / r['baseline']:>11,.0f}{r['local']:>14.2f}"
                  f"{r['rows'] / r['local']:>11,.0f}{r['api']:>8.2f}{r['rows'] / r['api']:>11,.0f}"
                  f"{r['baseline'] / r['api']:>12.2f}{r['local'] / r['api']:>14.2f}")
        print("\npeak RSS (VmHWM, MB) of the bulk worker's processes (supervisor, Celery main, pool children):")
        for r in results:
            print(f"{r['rows']:>10,} rows ({r['chunks']} chunks): "
                  + ", ".join(f"{mb:.0f}" for mb in r["rss"].values()))
        print("\nwhere the API's time went (upload: until the job exists; plan: until the first chunk starts; "
              "chunks: first start to last finish, with each process's busy share; merge: last chunk to the end):")
        for r in results:
            t = r["timeline"]
            print(f"{r['rows']:>10,} rows: upload {t['upload']:.2f} s, plan {t['plan']:.2f} s, "
                  f"chunks {t['chunks']:.2f} s (busy {t['busy']:.0%}), merge {t['merge']:.2f} s")
        first, second = (max(r["rss"].values()) for r in results[:2])
        print(f"\nlargest process at {results[1]['rows']:,} rows / at {results[0]['rows']:,}: "
              f"{second / first:.3f}")
        print(f"logs: {folder / 'services.log'}")
    finally:
        for process in started:
            stop(process)
        redis.stop()


if __name__ == "__main__":
    main()
