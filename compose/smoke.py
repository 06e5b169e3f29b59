"""The image, built and run: every role of the stack as a container, against a Redis container, through the
containerised gateway (`.ci/run` runs it after the test suite; root and podman, as on the project's CI).

    .venv/bin/python compose/smoke.py [--keep]

Makes the stand-in base images (compose/bases.sh), builds compose/Dockerfile unchanged, then runs: Redis with
compose's ACL (no anonymous user, a password), the image's own CLI to fetch the data, train crime and create an
API key, then the gateway (production profile), a record worker, a bulk worker and a stream consumer. Through
the gateway it scores a job, a 100,000-row Parquet batch (output downloaded and counted) and 100 stream records
(outputs read back), then stops every container with its grace period and checks that nothing is left running,
and says why docker-compose.yml itself cannot run here.
It prints the build time, the image's size and the gateway's start time. A machine without podman gets one line
saying the test was skipped and why; any failure exits non-zero.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/batcomputer:smoke"
PREFIX = "bcsmoke-"  # every container this script starts
DATA = "/var/lib/batcomputer"
# No CAP_SYS_RESOURCE here (podman's default ulimits cannot be set), and cgroups in hybrid mode (v1 and v2),
# which crun refuses and runc takes.
CONTAINERS_CONF = ('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                   '[engine]\nruntime = "runc"\n')
GRACE = {"gateway": 30, "record-worker": 60, "bulk-worker": 120, "stream-consumer": 30}  # docker-compose.yml's
RECORD = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}


def say(line: str) -> None:
    print(f"smoke: {line}", flush=True)


def run(*args: str, check: bool = True, capture: bool = False,
        timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), text=True, capture_output=capture, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"smoke: `{' '.join(args[:6])} ...` failed with {done.returncode}\n"
                         f"{(done.stderr or '')[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:  # not up yet: keep asking until the deadline
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise SystemExit(f"smoke: timed out after {timeout:.0f} s waiting for {what}")


def skipped() -> str | None:
    """Why this machine cannot run the smoke test (None: it can)."""
    for tool in ("podman", "mmdebstrap", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman mmdebstrap catatonit runc)"
    if os.geteuid() != 0:
        return "it needs root (rootful podman and mmdebstrap)"
    return None


def crime_parquet(rows: int) -> bytes:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    crimes = np.array(["Burglary", "Vehicle crime", "Shoplifting", "Criminal damage and arson", "Drugs"],
                      dtype=object)
    table = pa.table({"ref": pa.array(np.arange(rows)), "force": ["West Yorkshire Police"] * rows,
                      "crime": pa.array(crimes[rng.integers(0, len(crimes), rows)]),
                      "month": pa.array(rng.integers(1, 13, rows))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


class Smoke:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.password = secrets.token_hex(16)
        self.redis_port, self.api_port = free_port(), free_port()
        self.url = f"redis://batcomputer:{self.password}@127.0.0.1:{self.redis_port}/0"
        self.state = folder / "batcomputer"
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.timings: dict[str, float] = {}

    def env(self) -> list[str]:
        values = {"BATCOMPUTER_REDIS_URL": self.url, "BATCOMPUTER_KEY_PREFIX": "bcsmoke:",
                  "BATCOMPUTER_WORKER_METRICS_PORT": "0", "BATCOMPUTER_METRICS_HOST": "127.0.0.1",
                  "BATCOMPUTER_LOG_FORMAT": "json"}
        return [part for name, value in values.items() for part in ("-e", f"{name}={value}")]

    def cli(self, *args: str, capture: bool = True) -> str:
        """The image's own `batcomputer` command, on the data volume."""
        return run("podman", "run", "--rm", "--network", "host", "-v", f"{self.state}:{DATA}", *self.env(), IMAGE,
                   *args, capture=capture).stdout or ""

    def start(self, role: str, *args: str) -> None:
        run("podman", "run", "-d", "--init", "--name", f"{PREFIX}{role}", "--network", "host",
            "--stop-timeout", str(GRACE.get(role, 10)), "-v", f"{self.state}:{DATA}", *self.env(), IMAGE, *args,
            capture=True)

    def build(self) -> None:
        started = time.monotonic()
        run("bash", str(ROOT / "compose" / "bases.sh"), "all")
        self.timings["bases"] = time.monotonic() - started
        started = time.monotonic()
        run("podman", "build", "--quiet", "--pull=never", "--network", "host", "-f", "compose/Dockerfile", "-t",
            IMAGE, ".", capture=True)
        self.timings["build"] = time.monotonic() - started
        size = run("podman", "image", "inspect", "--format", "{{.Size}}", IMAGE, capture=True).stdout.strip()
        self.timings["size_mb"] = int(size) / 1e6
        say(f"bases {self.timings['bases']:.0f} s, build {self.timings['build']:.0f} s, image "
            f"{self.timings['size_mb']:.0f} MB")

    def redis(self) -> Any:
        import redis

        run("podman", "run", "-d", "--name", f"{PREFIX}redis", "--network", "host", "docker.io/library/redis:7.4",
            "redis-server", "--port", str(self.redis_port), "--save", "", "--appendonly", "no",
            "--user", "default", "off", "--user", "batcomputer", "on", f">{self.password}", "~*", "&*", "+@all",
            "-@dangerous", "+info", capture=True)
        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, 30, "the Redis container")
        return client

    def prepare(self) -> str:
        self.state.mkdir(parents=True)
        os.chown(self.state, 10001, 10001)  # the image's user owns its data folder
        started = time.monotonic()
        self.cli("data", "fetch")
        self.cli("train", "crime", "--promote")
        self.timings["train"] = time.monotonic() - started
        token = self.cli("keys", "create", "smoke", "--scope", "admin").strip().splitlines()[-1]
        assert token.startswith("bc_"), token
        say(f"data fetched and crime trained by the image's CLI in {self.timings['train']:.0f} s; a key created")
        return token

    def roles(self) -> None:
        import requests

        started = time.monotonic()
        self.start("gateway", "api", "--host", "127.0.0.1", "--port", str(self.api_port))
        wait_for(lambda: requests.get(f"{self.base}/healthz", timeout=2).status_code == 200, 60, "the gateway")
        self.timings["gateway_start"] = time.monotonic() - started
        self.start("record-worker", "worker", "--queues", "records")
        self.start("bulk-worker", "worker", "--queues", "bulk")
        self.start("stream-consumer", "stream", "crime")

        def ready() -> bool:
            body = requests.get(f"{self.base}/readyz", timeout=5).json()
            return bool(body.get("workers", {}).get("records") and body["workers"].get("bulk"))

        wait_for(ready, 120, "both workers in /readyz")
        say(f"gateway answered /healthz {self.timings['gateway_start']:.1f} s after `podman run`; workers ready")

    def exercise(self, token: str, client: Any) -> None:
        import pyarrow.parquet as pq
        import requests

        headers = {"Authorization": f"Bearer {token}"}
        refused = requests.post(f"{self.base}/api/models/crime/jobs", json=RECORD, timeout=10)
        assert refused.status_code == 401, refused.text  # the production profile
        job = requests.post(f"{self.base}/api/models/crime/jobs?wait=30", json=RECORD, headers=headers, timeout=40)
        assert job.status_code == 200 and job.json()["state"] == "succeeded", job.text
        say(f"job {job.json()['id']} succeeded: {job.json()['results'][0]['label']}")

        started = time.monotonic()
        batch = requests.post(f"{self.base}/api/models/crime/batches", data=crime_parquet(100_000), timeout=60,
                              headers={**headers, "Content-Type": "application/vnd.apache.parquet"})
        assert batch.status_code == 202, batch.text
        batch_id = batch.json()["id"]

        def ended() -> dict[str, Any] | None:
            found: dict[str, Any] = requests.get(f"{self.base}/api/jobs/{batch_id}", headers=headers, timeout=10).json()
            return found if found["state"] in ("succeeded", "failed", "dead", "cancelled") else None

        final = wait_for(ended, 300, "the batch")
        assert final["state"] == "succeeded", final
        output = requests.get(f"{self.base}/api/jobs/{batch_id}/output", headers=headers, timeout=60)
        table = pq.read_table(io.BytesIO(output.content))
        assert table.num_rows == 100_000 and table.column("ref").to_pylist() == list(range(100_000))
        say(f"100,000-row batch scored in {time.monotonic() - started:.1f} s; output downloaded, every row in order")

        appended = requests.post(f"{self.base}/api/models/crime/stream", json={"records": [RECORD] * 100},
                                 headers=headers, timeout=10)
        assert appended.status_code == 202, appended.text
        out = "bcsmoke:stream:crime:out"
        wait_for(lambda: client.xlen(out) >= 100, 60, "100 stream outputs")
        say("100 stream records scored by the stream consumer")

    def stop(self) -> None:
        """Stop every role with its grace period (SIGTERM first), then check nothing is left running."""
        for role in ("gateway", "stream-consumer", "bulk-worker", "record-worker", "redis"):
            name = f"{PREFIX}{role}"
            if run("podman", "container", "exists", name, check=False).returncode != 0:
                continue
            started = time.monotonic()
            run("podman", "stop", "--time", str(GRACE.get(role, 10)), name, check=False, capture=True)
            code = run("podman", "inspect", "--format", "{{.State.ExitCode}}", name, capture=True,
                       check=False).stdout.strip()
            say(f"{role} stopped in {time.monotonic() - started:.1f} s (exit code {code})")
        running = run("podman", "ps", "--filter", f"name={PREFIX}", "--format", "{{.Names}}", capture=True).stdout
        assert not running.strip(), f"still running: {running}"

    def remove(self) -> None:
        names = run("podman", "ps", "-a", "--filter", f"name={PREFIX}", "--format", "{{.Names}}", capture=True,
                    check=False).stdout.split()
        if names:
            run("podman", "rm", "--force", *names, check=False, capture=True)


def compose_file_status() -> str:
    """Why docker-compose.yml itself is not run here (the roles above run from the same image instead)."""
    found = run("podman-compose", "version", check=False, capture=True) if shutil.which("podman-compose") else None
    version = (found.stdout.split("podman-composer version")[-1].split()[0:1] or ["?"])[0] if found else None
    tool = f"podman-compose {version}" if version else "no podman-compose (Debian has 1.0.3)"
    return (f"docker-compose.yml itself is not run here: {tool}, and Debian's 1.0.3 knows neither profiles (it "
            "would start Prometheus and Grafana, whose images cannot be made from the Debian mirror) nor depends_on "
            "conditions, and podman runs no periodic health checks without systemd, so `service_healthy` could "
            "never hold; the roles above run from the same image, with compose's Redis ACL and grace periods")


def main() -> int:
    reason = skipped()
    if reason is not None:
        say(f"skipped: {reason}")
        return 0
    keep = "--keep" in sys.argv[1:]
    conf = Path(tempfile.mkdtemp(prefix="bcsmoke-conf-")) / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    os.chdir(ROOT)
    folder = Path(tempfile.mkdtemp(prefix="bcsmoke-"))
    smoke = Smoke(folder)
    smoke.remove()
    try:
        smoke.build()
        client = smoke.redis()
        token = smoke.prepare()
        smoke.roles()
        smoke.exercise(token, client)
        smoke.stop()
    except BaseException:
        for role in ("gateway", "record-worker", "bulk-worker", "stream-consumer"):
            logs = run("podman", "logs", "--tail", "30", f"{PREFIX}{role}", check=False, capture=True)
            print(f"--- {role} ---\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        raise
    finally:
        if not keep:
            smoke.remove()
            shutil.rmtree(folder, ignore_errors=True)
            run("podman", "image", "prune", "--force", check=False, capture=True)  # the build's dangling stages
    say(compose_file_status())
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
