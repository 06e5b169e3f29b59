"""Benchmark of stream scoring: records/s through a model's stream beside in-process scoring of the same rows,
and the end-to-end latency (append to output) at a steady rate.

Run with `.venv/bin/python bench/stream.py` (never part of `make test`). It starts a private Redis and the
stream consumers as `batcomputer up` ships them (one per served model; `--consumers N` for more), appends N
real-looking crime records (default 100,000) as fast as a producer can, and reports:

* in-process: ``predict_proba`` on all the rows at once, and the same code path the consumer uses
  (``score`` on micro-batches of ``BATCOMPUTER_STREAM_BATCH`` records), in this process;
* through the stream: records/s from the first append to the last output, and the ratio;
* latency: a producer appends at a steady rate (default 1,000 records/s for 20 s) and each output's time
  minus its input entry's time (both Redis stream ids are millisecond clocks of the same server) gives p50/p99.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batcomputer.jobqueue.streams import StreamStore  # noqa: E402
from batcomputer.models.registry import Registry  # noqa: E402
from batcomputer.models.scoring import score  # noqa: E402
from batcomputer.settings import Settings  # noqa: E402
from bench.run import real_records  # noqa: E402
from cli.launchers.redis_server import start_redis_server  # noqa: E402


def millis(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--consumers", type=int, default=1, help="consumer processes (up starts one per model)")
    parser.add_argument("--rate", type=int, default=1_000, help="records/s of the steady producer")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Settings.from_env()
    folder = Path(tempfile.mkdtemp(prefix="batcomputer-stream-bench-"))
    redis = start_redis_server(folder / "redis")
    env = {**os.environ, "BATCOMPUTER_REDIS_URL": redis.url, "BATCOMPUTER_KEY_PREFIX": "bench:",
           "BATCOMPUTER_REGISTRY": str(Path(base.registry).resolve()), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    settings = Settings.from_env(env)
    records = real_records(base, args.records, replace=True)
    bundle = Registry.from_settings(settings).bundle("crime", None, pipeline=True)
    fields = bundle.schema.field_names
    clean = [{f: r.get(f) for f in fields} for r in records]
    import pandas as pd

    start = time.perf_counter()
    bundle.pipeline.predict_proba(pd.DataFrame.from_records(clean, columns=fields))
    whole = time.perf_counter() - start
    start = time.perf_counter()
    for offset in range(0, len(clean), settings.stream_batch):
        score(bundle, clean[offset:offset + settings.stream_batch])
    batched = time.perf_counter() - start

    import redis as redis_module

    client = redis_module.Redis.from_url(redis.url)
    store = StreamStore(client, "bench:", "crime", settings.stream_maxlen)
    log = (folder / "consumers.log").open("ab")
    cli = str(Path(sys.executable).parent / "batcomputer")
    consumers = [subprocess.Popen([cli, "stream", "crime"], env=env, stdout=log, stderr=log, start_new_session=True)
                 for _ in range(args.consumers)]
    try:
        time.sleep(4)  # the consumers load the model
        bodies = [orjson.dumps(r) for r in records]
        import psutil

        watched = {"consumers": [psutil.Process(p.pid) for p in consumers], "redis": [psutil.Process(redis.handle.pid)],
                   "producer (this process)": [psutil.Process()]}

        def cpu() -> dict[str, float]:
            found = {}
            for name, processes in watched.items():
                total = 0.0
                for process in processes:
                    for each in [process, *process.children(recursive=True)]:
                        times = each.cpu_times()
                        total += times.user + times.system
                found[name] = total
            return found

        before = cpu()
        start = time.perf_counter()
        for offset in range(0, len(bodies), 5_000):
            store.append(bodies[offset:offset + 5_000], 10**9)
        appended = time.perf_counter() - start
        while client.xlen(store.output) < len(bodies):
            time.sleep(0.01)
        through = time.perf_counter() - start
        after = cpu()
        client.delete(store.output)

        interval = 1.0 / args.rate
        sent = 0
        begun = time.perf_counter()
        while time.perf_counter() - begun < args.seconds:
            due = int((time.perf_counter() - begun) / interval)
            if due > sent:
                store.append([bodies[(sent + i) % len(bodies)] for i in range(due - sent)], 10**9)
                sent = due
            time.sleep(0.001)
        while client.xlen(store.output) < sent:
            time.sleep(0.01)
        lags = sorted(millis(out_id) - millis(fields[b"in_id"]) for out_id, fields in
                      client.xrange(store.output, "-", "+"))
        p50, p99 = lags[len(lags) // 2], lags[int(len(lags) * 0.99)]

        # The drain alone: the backlog appended while no consumer runs, then consumed (from the first output
        # on, once the consumers have loaded the model), with no producer competing for the cores.
        for process in consumers:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        client.delete(store.output)
        for offset in range(0, len(bodies), 5_000):
            store.append(bodies[offset:offset + 5_000], 10**9)
        consumers = [subprocess.Popen([cli, "stream", "crime"], env=env, stdout=log, stderr=log,
                                      start_new_session=True) for _ in range(args.consumers)]
        while client.xlen(store.output) == 0:
            time.sleep(0.001)
        first = time.perf_counter()
        while client.xlen(store.output) < len(bodies):
            time.sleep(0.01)
        drain = time.perf_counter() - first
    finally:
        for process in consumers:
            os.killpg(process.pid, signal.SIGTERM)
        for process in consumers:
            process.wait(30)
        redis.stop()
    n = len(records)
    print(f"crime model; {os.cpu_count()} cores; {args.consumers} consumer process(es); micro-batches of "
          f"{settings.stream_batch}\n")
    print(f"in-process predict_proba, all rows at once:      {n / whole:>10,.0f} records/s")
    print(f"in-process score() in batches of {settings.stream_batch}:           {n / batched:>10,.0f} records/s")
    print(f"through the stream (append {appended:.2f} s):           {n / through:>10,.0f} records/s  "
          f"= {n / through / (n / whole):.2f} x all-at-once, {n / through / (n / batched):.2f} x batched")
    print(f"draining a backlog of {n:,} (no producer running):  {n / drain:>10,.0f} records/s  "
          f"= {n / drain / (n / whole):.2f} x all-at-once")
    spent = ", ".join(f"{name} {(after[name] - before[name]) / n * 1e6:.1f}" for name in after)
    print(f"CPU per record during the run (microseconds): {spent}")
    print(f"latency at {args.rate:,} records/s for {args.seconds} s ({len(lags):,} entries): p50 {p50} ms, "
          f"p99 {p99} ms")
    print(f"logs: {folder}")


if __name__ == "__main__":
    main()
