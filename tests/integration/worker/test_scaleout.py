"""Scale-out across hosts: Redis and the gateway in one network namespace, two worker "hosts" in two others
(each with its own hostname), joined by veth pairs on a private link of the test's own. Work spreads over
both hosts; one host's link is cut while it holds work; the other host finishes everything; nothing is lost
and no job gets two outcomes. Shipped timeouts (15 s leases, 30 s requeue). Needs root for `ip netns`: skipped,
with the reason, where the machine does not allow network namespaces."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import FINAL, STAT_RESCORED, Keys
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.settings import Settings
from tests.conftest import ROOT, free_port, run_cli, settings_env, wait_until
from tests.pipelines import HostGated

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}
# Addresses of the test's own: <subnet>.0.0/24 joins the test's end and the hub, <subnet>.1.0/24 and
# <subnet>.2.0/24 the hub and each host; the subnet is drawn per run among 10.200-10.249.


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def namespaces_allowed() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2"
    probe = f"bcprobe{uuid.uuid4().hex[:6]}"
    try:
        sh("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"this machine does not allow network namespaces ({exc})"
    sh("ip", "netns", "del", probe)
    return None


class Network:
    """The hub and two hosts, their links, and the processes started in them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:4]
        self.hub, self.hosts = f"bc{tag}hub", [f"bc{tag}h1", f"bc{tag}h2"]
        self.links: dict[str, str] = {}  # host namespace -> its end of the link
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tag = tag
        self.subnet = f"10.{200 + int(tag, 16) % 50}"
        self.hub_address = f"{self.subnet}.0.2"

    def build(self) -> None:
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        self._link(None, self.hub, f"bc{self.tag}r0", f"bc{self.tag}r1", 0)
        for index, host in enumerate(self.hosts, start=1):
            sh("ip", "netns", "add", host)
            sh("ip", "-n", host, "link", "set", "lo", "up")
            self.links[host] = self._link(self.hub, host, f"bc{self.tag}a{index}", f"bc{self.tag}b{index}", index)
            sh("ip", "-n", host, "route", "add", "default", "via", f"{self.subnet}.{index}.1")

    def _link(self, near: str | None, far: str, near_end: str, far_end: str, subnet: int) -> str:
        sh("ip", "link", "add", near_end, "type", "veth", "peer", "name", far_end)
        if near is not None:
            sh("ip", "link", "set", near_end, "netns", near)
        sh("ip", "link", "set", far_end, "netns", far)
        prefix = ["ip", "-n", near] if near else ["ip"]
        near_address, far_address = (f"{self.subnet}.{subnet}.1", f"{self.subnet}.{subnet}.2")
        sh(*prefix, "addr", "add", f"{near_address}/24", "dev", near_end)
        sh(*prefix, "link", "set", near_end, "up")
        sh("ip", "-n", far, "addr", "add", f"{far_address}/24", "dev", far_end)
        sh("ip", "-n", far, "link", "set", far_end, "up")
        return far_end

    def cut(self, host: str) -> None:
        sh("ip", "-n", host, "link", "set", self.links[host], "down")

    def start(self, namespace: str, hostname: str, command: list[str], env: dict[str, str],
              log: Path) -> subprocess.Popen[bytes]:
        """Run ``command`` in ``namespace`` under its own hostname (a UTS namespace of its own)."""
        shell = f"hostname {hostname} && exec \"$@\""
        process = subprocess.Popen(["ip", "netns", "exec", namespace, "unshare", "--uts", "sh", "-c", shell, "sh",
                                    *command], env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def tear_down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(30)
        # the test's end of the hub's link first: a namespace outlives its deletion while sockets hold it
        subprocess.run(["ip", "link", "del", f"bc{self.tag}r0"], capture_output=True, timeout=30)
        for namespace in [self.hub, *self.hosts]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


@pytest.fixture
def network() -> Iterator[Network]:
    reason = namespaces_allowed()
    if reason:
        pytest.skip(reason)
    built = Network()
    try:
        built.build()
        yield built
    finally:
        built.tear_down()


def test_two_hosts_share_the_work_and_one_cut_off_loses_nothing(network: Network, settings: Settings,
                                                                 titanic_draft: Draft, tmp_path: Path) -> None:
    redis_port, api_port = free_port(), free_port()
    hub = network.hub_address
    url = f"redis://{hub}:{redis_port}/0"
    gate = "bc-scaleout:gate"
    own = dataclasses.replace(settings, redis_url=url, key_prefix="bcs:", profile="production",
                              keys_file=str(tmp_path / "keys.json"))
    registry = Registry.from_settings(own)
    schema = dataclasses.replace(titanic_draft.schema, model="spread")
    version = registry.publish(dataclasses.replace(titanic_draft, model="spread", schema=schema,
                                                   pipeline=HostGated(titanic_draft.pipeline, url, gate))).version
    registry.set_alias("spread", "production", version)
    key = run_cli(settings_env(own), "keys", "create", "test", "--scope", "score").stdout.strip().splitlines()[-1]
    env = settings_env(own)
    logs = tmp_path / "logs"
    logs.mkdir()
    redis_server = shutil.which("redis-server") or "redis-server"
    network.start(network.hub, "hub", [redis_server, "--port", str(redis_port), "--bind", hub, "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--protected-mode", "no"], env,
                  logs / "redis.log")
    client = redis.Redis.from_url(url, socket_timeout=5)
    wait_until(lambda: _pings(client), 30, "Redis in the hub")
    script = str(Path(sys.executable).parent / "batcomputer")
    network.start(network.hub, "hub", [script, "api", "--host", "0.0.0.0", "--port", str(api_port)], env,
                  logs / "gateway.log")
    for number, host in enumerate(network.hosts, start=1):
        for queues in ("records", "bulk"):
            network.start(host, f"host{number}", [script, "worker", "--queues", queues], env,
                          logs / f"{host}-{queues}.log")
    keys = Keys(own.key_prefix)
    wait_until(lambda: all(client.zcard(keys.workers(q)) >= 2 for q in ("records", "bulk")), 90,
               "both hosts' record and bulk workers")
    base = f"http://{hub}:{api_port}"
    auth = {"Authorization": f"Bearer {key}"}
    wait_until(lambda: _answers(f"{base}/healthz"), 60, "the gateway in the hub")

    singles = [{**RECORD, "age": float(1 + i % 80), "sibsp": i % 5} for i in range(500)]
    big = [{**RECORD, "age": float(1 + i % 90), "parch": i % 4} for i in range(1_000)]

    def submit(body: dict[str, Any]) -> str:
        response = requests.post(f"{base}/api/models/spread/jobs", json=body, headers=auth, timeout=30)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    bulk_id = submit({"records": big})
    with ThreadPoolExecutor(16) as pool:
        single_ids = list(pool.map(submit, singles))
    # Both hosts are scoring (each scoring call announces its host, then waits at the gate).
    wait_until(lambda: {b"host1", b"host2"} <= set(client.lrange(f"{gate}:hosts", 0, -1)), 60,
               "both hosts to take work")
    network.cut(network.hosts[0])  # host 1 holds work it can no longer report
    client.rpush(gate, *["open"] * 5_000)

    store = JobStore.from_settings(client, own)  # polled in Redis: 501 jobs a round would pass the rate limit

    def outcomes() -> list[dict[str, Any]] | None:
        jobs = [store.get(i) for i in [bulk_id, *single_ids]]
        return jobs if all(j["state"] in FINAL for j in jobs) else None

    jobs = wait_until(outcomes, 180, "host 2 to finish every job, host 1's included")
    assert [j["state"] for j in jobs] == ["succeeded"] * 501
    for job in jobs:
        job["results"] = job["results"].parse()
    assert requests.get(f"{base}/api/jobs/{bulk_id}", headers=auth, timeout=30).json()["results"] == jobs[0]["results"]
    plain = registry.bundle("spread", version, pipeline=True)
    plain = dataclasses.replace(plain, pipeline=plain.pipeline.inner)
    assert [r["survived_proba"] for r in jobs[0]["results"]] == [r["survived_proba"] for r in score(plain, big)]
    expected = score(plain, singles)
    assert [j["results"][0]["survived_proba"] for j in jobs[1:]] == [r["survived_proba"] for r in expected]
    stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
    assert stats.get(STAT_RESCORED, 0) == 0  # no job got two outcomes
    # Host 1's jobs came back on host 2: sent again by the sweeper once host 1's lease ran out, or taken over
    # when the broker delivered their unacknowledged message again (whichever came first: both wait ~30 s).
    assert stats.get("resent", 0) >= 1 or max(j["attempts"] for j in jobs) >= 2


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
