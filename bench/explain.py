"""Benchmark of explanations: records/s with and without ``explain``, in one process and through the stack.

Run with `.venv/bin/python bench/explain.py` (never part of `make test`; `make bench` runs it after the main
benchmark). With the crime and titanic bundles of the registry (`batcomputer train crime titanic` first), it
reports, for each model:

* in-process: ``score`` alone and ``score`` plus ``explain`` on one record at a time, lists of 100 and 1,000
  records, and a 100,000-row chunk as a bulk worker scores it (``score_rows``, then ``explain_rows``);
* through the stack (a private Redis, one record worker and one bulk worker as shipped, the gateway): single
  jobs sent by 4 clients at once, unexplained, then explained; then the same 4 unexplained clients beside 4
  more clients, unexplained, then explained (an explained request shares the workers with unexplained ones:
  the 4 clients' p50, p95 and rate beside explained ones are compared with theirs beside unexplained ones, the
  load any 4 more clients add); and a 100,000-row batch with and without ``?explain=true``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batcomputer.models.explain import explain  # noqa: E402
from batcomputer.models.registry import Registry  # noqa: E402
from batcomputer.models.scoring import score  # noqa: E402
from batcomputer.settings import Settings  # noqa: E402
from cli.launchers.redis_server import free_port, start_redis_server  # noqa: E402


def sample_records(settings: Settings, model: str, count: int) -> list[dict[str, Any]]:
    """``count`` records drawn from the model's real training data (the spec's own derivation), clean as a
    worker scores them: every field, None where absent."""
    from training.trainer import sample_records as sample

    frame = sample(model, count, None, Path(settings.data_dir), seed=7)
    fields = Registry.from_settings(settings).schema(model).field_names
    return [{k: (None if v is None or v != v else v) for k, v in row.items() if k in fields}
            for row in frame.to_dict(orient="records")]


def sent(record: dict[str, Any]) -> bytes:
    """A record as a client sends it: absent fields left out."""
    return json.dumps({k: v for k, v in record.items() if v is not None}).encode()


def rate(call: Any, records: int, repeats: int = 3) -> float:
    """Records per second of ``call`` (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return records / best


def in_process(settings: Settings, model: str) -> list[tuple[str, float, float]]:
    bundle = Registry.from_settings(settings).bundle(model, None, pipeline=True)
    records = sample_records(settings, model, 1_000)
    rows = []
    singles = records[:50]
    rows.append(("one record per call", rate(lambda: [score(bundle, [r]) for r in singles], len(singles)),
                 rate(lambda: [(score(bundle, [r]), explain(bundle, [r])) for r in singles], len(singles), 1)))
    for size in (100, 1_000):
        part = records[:size]
        rows.append((f"lists of {size:,}", rate(lambda part=part: score(bundle, part), size),
                     rate(lambda part=part: (score(bundle, part), explain(bundle, part)), size, 1)))
    import pyarrow as pa

    from worker.parquet.chunk import explain_rows, score_rows

    table = pa.Table.from_pylist((records * 100)[:100_000])
    kept: list[str] = []
    plain = rate(lambda: score_rows(bundle, table, kept), table.num_rows, 1)
    began = time.perf_counter()
    out, _ = score_rows(bundle, table, kept)
    explain_rows(bundle, table, out)
    rows.append(("a 100,000-row chunk", plain, table.num_rows / (time.perf_counter() - began)))
    return rows


def post(url: str, body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def clients(base: str, model: str, records: list[dict[str, Any]], explained: bool, seconds: float,
            threads: int) -> list[float]:
    """Latencies of single jobs (``?wait``) sent by ``threads`` clients for ``seconds``."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    query = "?wait=30" + ("&explain=true" if explained else "")

    def one(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            began = time.perf_counter()
            job = post(f"{base}/api/models/{model}/jobs{query}", sent(records[i % len(records)]))
            assert job["state"] == "succeeded", job
            latencies.append(time.perf_counter() - began)
            i += threads

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies


def side_by_side(base: str, model: str, records: list[dict[str, Any]],
                 explained: bool) -> tuple[list[float], list[float]]:
    """Latencies of 4 unexplained clients and of 4 more (explained or not), all sending at once."""
    found: dict[str, list[float]] = {}
    runs = [threading.Thread(target=lambda: found.__setitem__("measured", clients(base, model, records, False, 10, 4))),
            threading.Thread(target=lambda: found.__setitem__("more", clients(base, model, records, explained, 10, 4)))]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    return found["measured"], found["more"]


def batch(base: str, model: str, data: bytes, explained: bool) -> float:
    began = time.perf_counter()
    job = post(f"{base}/api/models/{model}/batches" + ("?explain=true" if explained else ""), data,
               "application/vnd.apache.parquet")
    while job["state"] not in ("succeeded", "failed", "dead", "cancelled"):
        with urllib.request.urlopen(f"{base}/api/jobs/{job['id']}?wait=5", timeout=30) as response:
            job = json.loads(response.read())
    assert job["state"] == "succeeded", job
    return float(job["rows_total"]) / (time.perf_counter() - began)


def through_stack(settings: Settings, model: str) -> list[tuple[str, float, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = sample_records(settings, model, 1_000)
    folder = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    local = start_redis_server(folder / "redis", free_port())
    env = {**os.environ, "BATCOMPUTER_REDIS_URL": local.url, "BATCOMPUTER_REGISTRY":
           settings.registry, "BATCOMPUTER_STORAGE_ROOTS": str(folder / "batches"), "BATCOMPUTER_PREFECT": "false",
           "BATCOMPUTER_WORKER_METRICS_PORT": "0"}
    port = free_port()
    script = str(Path(sys.executable).parent / "batcomputer")
    processes = [subprocess.Popen([script, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
                 for args in (["worker", "--queues", "records"], ["worker", "--queues", "bulk"],
                              ["api", "--port", str(port)])]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                post(f"{base}/api/models/{model}/jobs?wait=20", sent(records[0]))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        alone = clients(base, model, records, False, 10, 4)
        explained_alone = clients(base, model, records, True, 10, 4)
        beside = {explained: side_by_side(base, model, records, explained) for explained in (False, True)}
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist((records * 100)[:100_000]), sink)
        plain_batch = batch(base, model, sink.getvalue(), False)
        explained_batch = batch(base, model, sink.getvalue(), True)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(60)
        local.stop()
    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    (quiet, _), (busy, explained) = beside[False], beside[True]
    return [("single jobs, 4 clients: records/s", len(alone) / 10, len(explained_alone) / 10),
            ("4 unexplained clients beside 4 more: unexplained | explained", float("nan"), float("nan")),
            (f"  their records/s (alone: {len(alone) / 10:,.1f})", len(quiet) / 10, len(busy) / 10),
            (f"  their p50 ms (alone: {p(alone, 50):,.1f})", p(quiet, 50), p(busy, 50)),
            (f"  their p95 ms (alone: {p(alone, 95):,.1f})", p(quiet, 95), p(busy, 95)),
            ("  explained records/s: alone | beside them", len(explained_alone) / 10, len(explained) / 10),
            ("a 100,000-row batch: rows/s", plain_batch, explained_batch)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/explain.py")
    parser.add_argument("--models", default="crime,titanic")
    parser.add_argument("--no-stack", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    settings = Settings.from_env()
    print(f"machine: {os.cpu_count()} cores; {sys.version.split()[0]}")
    for model in args.models.split(","):
        fields = len(Registry.from_settings(settings).schema(model).field_names)
        print(f"\n{model} ({fields} fields: {2 ** fields} coalitions)")
        print(f"{'':58} {'plain':>12} {'explained':>12} {'ratio':>7}")
        rows = in_process(settings, model) + ([] if args.no_stack else through_stack(settings, model))
        for name, plain, explained in rows:
            if plain != plain:  # a heading
                print(name)
                continue
            ratio = explained / plain if plain else float("nan")
            print(f"{name:58} {plain:12,.1f} {explained:12,.1f} {ratio:7.3f}")


if __name__ == "__main__":
    main()
