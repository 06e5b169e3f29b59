"""Benchmark: the seed-style baseline and the best peer (MLServer) beside Batcomputer, driven by wrk.

Run with `make bench` (never part of `make test`). It starts a private Redis, the workers, the gateway, the
baseline and MLServer (installed on first use into its own virtual environment under var/bench, never a
project dependency), replays real crime records at concurrency 1, 8 and 32, then large record lists, and
prints requests/s, p50 and p99 with ratios to the baseline and to MLServer, and the CPU each process spent
per request.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batcomputer.models.registry import Registry  # noqa: E402
from batcomputer.settings import Settings, per_core  # noqa: E402
from cli.launchers.redis_server import free_port, start_redis_server  # noqa: E402

LUA = """
local bodies = {BODIES}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "{PATH}", {["Content-Type"] = "application/json"}, bodies[(i % #bodies) + 1])
end
"""


def real_records(settings: Settings, count: int, replace: bool = False) -> list[dict[str, Any]]:
    """Records taken from the real crime data, through the crime spec's own field derivation."""
    from training.datasets import load_dataset
    from training.features import build_table
    from training.spec import load_spec

    spec = load_spec("crime")
    raw, _ = load_dataset("crime", Path(settings.data_dir))
    table, _, _ = build_table(spec, spec.sources["police"], raw)
    sample = table.sample(n=count, random_state=7, replace=replace)
    records = []
    for row in sample.to_dict(orient="records"):
        record = {"force": row["force"], "crime": row["crime"], "month": int(row["month"])}
        if isinstance(row["district"], str):
            record["district"] = row["district"]
        records.append(record)
    return records


MLSERVER_VENV = ROOT / "var" / "bench" / "mlserver-venv"
MLSERVER_PINS = ("mlserver==1.7.1", "uvloop==0.21.0")  # newer uvloop breaks MLServer 1.7.1


def ensure_mlserver() -> Path:
    """MLServer in a virtual environment of its own, with the scikit-learn, pandas and numpy of this one (the
    bundle's pipeline unpickles only under the same scikit-learn minor version)."""
    from importlib.metadata import version

    pins = [*MLSERVER_PINS, *(f"{name}=={version(name)}" for name in ("scikit-learn", "pandas", "numpy", "joblib"))]
    stamp = MLSERVER_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(pins):
        return MLSERVER_VENV / "bin" / "mlserver"
    print(f"installing MLServer into {MLSERVER_VENV} (once): {' '.join(pins)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True)
    installed = subprocess.run([str(MLSERVER_VENV / "bin" / "pip"), "install", "--quiet",
                                "--disable-pip-version-check", *pins], capture_output=True, text=True)
    if installed.returncode != 0:
        sys.exit(f"could not install MLServer:\n{installed.stdout}{installed.stderr}")
    stamp.write_text("\n".join(pins))
    return MLSERVER_VENV / "bin" / "mlserver"


def mlserver_folder(folder: Path, model: str, http_port: int, grpc_port: int) -> Path:
    """MLServer's settings: the custom runtime of bench/mlserver_runtime.py with adaptive batching (32 / 10 ms)."""
    root = folder / "mlserver"
    (root / model).mkdir(parents=True)
    (root / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": http_port,
                                                    "grpc_port": grpc_port, "metrics_endpoint": None}))
    (root / model / "model-settings.json").write_text(json.dumps({
        "name": model, "implementation": "bench.mlserver_runtime.BundleRuntime", "max_batch_size": 32,
        "max_batch_time": 0.01}))
    return root


def v2_body(record: dict[str, Any]) -> str:
    """One record as an Open Inference Protocol (V2) request: one input per field, decoded as a pandas frame."""
    inputs = []
    for name, value in record.items():
        kind = "BYTES" if isinstance(value, str) else "INT64" if isinstance(value, int) else "FP64"
        inputs.append({"name": name, "shape": [1], "datatype": kind, "data": [value]})
    return json.dumps({"inputs": inputs, "parameters": {"content_type": "pd"}})


def lua_script(folder: Path, name: str, path: str, bodies: list[str]) -> Path:
    quoted = "{" + ",".join(json.dumps(b) for b in bodies) + "}"
    script = folder / f"{name}.lua"
    script.write_text(LUA.replace("{BODIES}", quoted).replace("{PATH}", path))
    return script


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def wait_ok(url: str, timeout: float = 120) -> None:
    """Wait until ``url`` answers 200 (a peer still loading its model answers with an error first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def parse_wrk(output: str) -> dict[str, float]:
    def millis(text: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = millis(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = millis(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": float(errors.group(1)) if errors else 0.0}


def cpu_seconds(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    totals = {}
    for name, group in processes.items():
        total = 0.0
        for process in group:
            try:
                for member in [process, *process.children(recursive=True)]:
                    times = member.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        totals[name] = total
    return totals


def run_wrk(script: Path, base: str, connections: int, seconds: int) -> tuple[dict[str, float], str]:
    threads = max(1, min(connections, 2))
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout",
               "30s", "-s", str(script), base]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output), output


def stage_latencies(gateway: str, model: str, records: list[dict[str, Any]]) -> dict[str, float]:
    """Split the round trip by the job's own timestamps: gateway in, queue, scoring, hand-back."""
    import statistics
    from datetime import datetime

    import requests

    session = requests.Session()
    stages: dict[str, list[float]] = {"HTTP in, validate, job record": [], "publish, queue, worker pickup": [],
                                      "scoring (micro-batch), job update": [], "wake-up, HTTP out": [],
                                      "total": []}
    for index in range(200):
        sent = time.time()
        job = session.post(f"{gateway}/api/models/{model}/jobs?wait=10", json=records[index % len(records)]).json()
        back = time.time()
        created, started, finished = (datetime.fromisoformat(job[k]).timestamp() for k in
                                      ("created", "started", "finished"))
        for name, value in zip(stages, (created - sent, started - created, finished - started, back - finished,
                                        back - sent), strict=True):
            stages[name].append(value * 1000)
    return {name: statistics.median(values) for name, values in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="crime", help="crime (gradient boosting) or crime-rf (random forest)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--record-workers", type=int, default=None,
                        help="record worker processes (default: what `batcomputer up` starts)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started (the finally below)
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    base_settings = Settings.from_env()
    if args.model not in Registry.from_settings(base_settings).models():
        from training.trainer import train

        train(base_settings, args.model, promote=True)
    folder = Path(tempfile.mkdtemp(prefix="batcomputer-bench-"))
    redis = start_redis_server(folder / "redis")
    env = {**os.environ, "BATCOMPUTER_REDIS_URL": redis.url, "BATCOMPUTER_KEY_PREFIX": "bench:",
           "BATCOMPUTER_REGISTRY": str(Path(base_settings.registry).resolve()),
           "BATCOMPUTER_MAX_RECORDS": "1000", "PYTHONPATH": str(ROOT),
           # one OpenMP thread, for the baseline as for the workers
           "OMP_NUM_THREADS": "1", "BENCH_MODEL": args.model, "BATCOMPUTER_DEFAULT_MODEL": args.model}
    cli = str(Path(sys.executable).parent / "batcomputer")
    started: dict[str, list[subprocess.Popen[bytes]]] = {"record workers": [], "bulk worker": [], "gateway": [],
                                                         "baseline": [], "mlserver": []}
    mlserver = ensure_mlserver()
    log = (folder / "services.log").open("ab")

    def start(kind: str, command: list[str]) -> None:
        started[kind].append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log,
                                              start_new_session=True))

    gateway_port, baseline_port, mlserver_port = free_port(), free_port(), free_port()
    try:
        record_workers = args.record_workers or per_core(base_settings.record_workers)
        for _ in range(record_workers):
            start("record workers", [cli, "worker", "--queues", "records", "--loglevel", "INFO"])
        start("bulk worker", [cli, "worker", "--queues", "bulk", "--loglevel", "WARNING"])
        start("gateway", [cli, "api", "--port", str(gateway_port)])  # as shipped
        start("baseline", [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync",
                           "--no-control-socket", "--bind", f"127.0.0.1:{baseline_port}",
                           "bench.baseline:create_baseline()"])
        start("mlserver", [str(mlserver), "start", str(mlserver_folder(folder, args.model, mlserver_port,
                                                                       free_port()))])
        gateway, baseline = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{baseline_port}"
        peer = f"http://127.0.0.1:{mlserver_port}"
        wait_http(f"{gateway}/readyz")
        wait_http(f"{baseline}/api/predict/none")  # 404/405 also proves it listens
        wait_ok(f"{peer}/v2/models/{args.model}/ready")
        records = real_records(base_settings, 500)
        bodies = [json.dumps(r) for r in records]
        scripts = {
            "baseline /api/predict": (baseline, lua_script(folder, "baseline", "/api/predict", bodies)),
            "mlserver /v2 infer": (peer, lua_script(folder, "mlserver", f"/v2/models/{args.model}/infer",
                                                    [v2_body(r) for r in records])),
            "batcomputer /api/predict": (gateway, lua_script(folder, "predict", "/api/predict", bodies)),
            "batcomputer /v2 infer": (gateway, lua_script(folder, "v2", f"/v2/models/{args.model}/infer",
                                                          [v2_body(r) for r in records])),  # MLServer's payload
            "batcomputer jobs?wait=10": (gateway, lua_script(folder, "jobs", f"/api/models/{args.model}/jobs?wait=10",
                                                             bodies)),
        }
        processes = {k: [psutil.Process(p.pid) for p in v] for k, v in started.items()}
        processes["redis"] = [psutil.Process(redis.handle.pid)]
        print(f"{args.model} model, {len(records)} real records cycled; {args.seconds} s per run; "
              f"{os.cpu_count()} cores; {record_workers} record worker process(es), gateway as shipped "
              f"({per_core(base_settings.api_workers)} processes)\n")
        for _, (base, script) in scripts.items():  # warm up every path
            run_wrk(script, base, 8, 2)
        rows = []
        baseline_at: dict[int, dict[str, float]] = {}
        peer_at: dict[int, dict[str, float]] = {}
        for connections in (1, 8, 32):
            for name, (base, script) in scripts.items():
                before = cpu_seconds(processes)
                result, _ = run_wrk(script, base, connections, args.seconds)
                after = cpu_seconds(processes)
                total = result["rps"] * args.seconds
                cpu = {k: (after[k] - before[k]) / total * 1000 for k in after if after[k] - before[k] > 0.05}
                if name.startswith("baseline"):
                    baseline_at[connections] = result
                if name.startswith("mlserver"):
                    peer_at[connections] = result
                rows.append((name, connections, result, cpu))
        print(f"{'target':<28}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x base':>8}{'x mls':>7}"
              "  CPU ms/request")
        for name, connections, result, cpu in rows:
            ratio = result["rps"] / baseline_at[connections]["rps"]
            to_peer = result["rps"] / peer_at[connections]["rps"]
            spent = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            flag = f"  ({int(result['non2xx'])} non-2xx)" if result["non2xx"] else ""
            print(f"{name:<28}{connections:>5}{result['rps']:>10.0f}{result['p50']:>9.1f}{result['p99']:>9.1f}"
                  f"{ratio:>8.2f}{to_peer:>7.2f}  {spent}{flag}")
        print()
        for size in (100, 1000):
            chunk = [json.dumps({"records": [records[(i + j) % len(records)] for j in range(size)]})
                     for i in range(0, len(records), 50)]
            script = lua_script(folder, f"records{size}", f"/api/models/{args.model}/jobs?wait=30", chunk)
            for connections in (2, 8):
                result, _ = run_wrk(script, gateway, connections, args.seconds)
                print(f"{{'records': [{size}]}} conc {connections:>2}: {result['rps']:8.1f} req/s = "
                      f"{result['rps'] * size:9.0f} records/s, p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms")
        print("\nwhere a single record's time goes at concurrency 1 (medians of 200 sequential requests):")
        for stage, millis in stage_latencies(gateway, args.model, records).items():
            print(f"  {stage:<34}{millis:6.2f} ms")
        batches = [line for line in (folder / "services.log").read_text(errors="replace").splitlines()
                   if "micro-batches:" in line or "published" in line]
        print("\n".join(["", "batching seen (cumulative, from the logs):", *batches[-4:]]))
        print(f"\nlogs: {folder / 'services.log'}")
    finally:
        for group in started.values():
            for process in group:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
        for group in started.values():
            for process in group:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        redis.stop()


if __name__ == "__main__":
    main()
