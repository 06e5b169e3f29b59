"""Benchmark of capture's cost: single records at concurrency 32 and a stream backlog drained, with capture off
and on, in one run.

Run with `.venv/bin/python bench/capture.py` (`make bench` runs it; never part of `make test`). It starts a
private Redis, the record workers and the gateway as `batcomputer up` ships them, and a stream consumer, all
with capture off, then all again with capture on (``BATCOMPUTER_CAPTURE_ROOT`` a local folder, the shipped
rates, roll size and age), and reports for each: requests/s and p50 of `POST /api/models/crime/jobs?wait=10`
driven by wrk at concurrency 32, records/s draining a backlog of real crime records through the stream, and the
CPU time the stream consumer spent per record of it (which the machine's other work does not inflate). The
two settings alternate (off, on, off, on) and each figure is the best of its runs (each stack drains the
backlog three times: one drain takes seconds, and this machine's speed varies by 10% and more from one second
to the next), so a machine that warms up or slows down during the run favours neither.
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
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batcomputer.jobqueue.streams import StreamStore  # noqa: E402
from batcomputer.settings import Settings, per_core  # noqa: E402
from bench.run import lua_script, real_records, run_wrk, wait_http  # noqa: E402
from cli.launchers.groups import stop_groups  # noqa: E402
from cli.launchers.redis_server import free_port, start_redis_server  # noqa: E402


class Stack:
    """The gateway, record workers and a stream consumer of one setting (capture on or off)."""

    def __init__(self, env: dict[str, str], log: Any, record_workers: int) -> None:
        cli = str(Path(sys.executable).parent / "batcomputer")
        self.port = free_port()
        commands = [[cli, "worker", "--queues", "records", "--loglevel", "WARNING"]] * record_workers
        commands += [[cli, "api", "--port", str(self.port)], [cli, "stream", "crime", "--metrics-port=0"]]
        self.processes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log,
                                           start_new_session=True) for command in commands]
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.base}/readyz")

    def stop(self) -> None:
        stop_groups(self.processes, 60)


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its children so far: a cost that a noisy machine's other
    work does not add to, unlike the wall clock."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def drain(client: Any, store: StreamStore, bodies: list[bytes]) -> float:
    """Records/s draining ``bodies`` appended at once, from the first output to the last."""
    client.delete(store.output)
    done = client.xlen(store.output)
    for offset in range(0, len(bodies), 5_000):
        store.append(bodies[offset:offset + 5_000], 10**9)
    while client.xlen(store.output) == done:
        time.sleep(0.001)
    first = time.perf_counter()
    while client.xlen(store.output) < done + len(bodies):
        time.sleep(0.01)
    return len(bodies) / (time.perf_counter() - first)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/capture.py")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--records", type=int, default=100_000, help="stream backlog drained in each run")
    parser.add_argument("--drains", type=int, default=3, help="backlogs drained by each stack")
    parser.add_argument("--rounds", type=int, default=2, help="stacks started of each setting, in turn")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base_settings = Settings.from_env()
    folder = Path(tempfile.mkdtemp(prefix="batcomputer-capture-bench-"))
    redis = start_redis_server(folder / "redis")
    env = {**os.environ, "BATCOMPUTER_REDIS_URL": redis.url, "BATCOMPUTER_KEY_PREFIX": "bench:",
           "BATCOMPUTER_REGISTRY": str(Path(base_settings.registry).resolve()), "BATCOMPUTER_PREFECT": "false",
           "BATCOMPUTER_WORKER_METRICS_PORT": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    records = real_records(base_settings, 500)
    script = lua_script(folder, "jobs", "/api/models/crime/jobs?wait=10", [orjson.dumps(r).decode() for r in records])
    bodies = [orjson.dumps(r) for r in real_records(base_settings, args.records, replace=True)]
    import redis as redis_module

    client = redis_module.Redis.from_url(redis.url)
    store = StreamStore(client, "bench:", "crime", base_settings.stream_maxlen)
    record_workers = per_core(base_settings.record_workers)
    log = (folder / "services.log").open("ab")
    found: dict[bool, dict[str, list[float]]] = {on: {"rps": [], "p50": [], "drain": [], "cpu": []}
                                                 for on in (False, True)}
    captured = folder / "capture"
    try:
        for on in (False, True) * args.rounds:
            stack = Stack({**env, **({"BATCOMPUTER_CAPTURE_ROOT": str(captured)} if on else {})}, log,
                          record_workers)
            try:
                run_wrk(script, stack.base, 8, 2)  # warm up
                result, _ = run_wrk(script, stack.base, 32, args.seconds)
                found[on]["rps"].append(result["rps"])
                found[on]["p50"].append(result["p50"])
                for _ in range(args.drains):
                    before = cpu_seconds(stack.processes[-1].pid)
                    found[on]["drain"].append(drain(client, store, bodies))
                    found[on]["cpu"].append((cpu_seconds(stack.processes[-1].pid) - before) / len(bodies) * 1e6)
            finally:
                stack.stop()
    finally:
        redis.stop()
    for on in (False, True):
        print(f"every drain with capture {('off', 'on')[on]}: "
              f"{', '.join(f'{rate:,.0f}' for rate in found[on]['drain'])} records/s; the consumer's CPU "
              f"{', '.join(f'{cpu:.1f}' for cpu in found[on]['cpu'])} us per record")
    files = list(captured.rglob("*.parquet"))
    print(f"crime model; {os.cpu_count()} cores; {record_workers} record worker process(es), the gateway and one "
          f"stream consumer as shipped; capture at the shipped rates; best of {args.rounds} runs each "
          f"({args.drains} drains per run)\n")
    print(f"{'':44}{'off':>12}{'on':>12}{'on / off':>10}")
    rows = [("single jobs at concurrency 32: requests/s", max(found[False]["rps"]), max(found[True]["rps"])),
            ("  p50 ms", min(found[False]["p50"]), min(found[True]["p50"])),
            (f"stream backlog of {args.records:,} drained: records/s", max(found[False]["drain"]),
             max(found[True]["drain"])),
            ("  the stream consumer's CPU per record (us)", min(found[False]["cpu"]), min(found[True]["cpu"]))]
    for name, off, on in rows:
        print(f"{name:44}{off:>12,.1f}{on:>12,.1f}{on / off:>10.3f}")
    print(f"\ncaptured: {len(files)} file(s), {sum(f.stat().st_size for f in files) / 1e6:.1f} MB under {captured}")


if __name__ == "__main__":
    main()
