"""The stack on a Redis as production runs it: TLS (`rediss://`, the certificate verified) and the compose file's
ACL (no anonymous access, a user with a password, no dangerous commands). Gateway, record and bulk workers and
a stream consumer, as processes, against a private redis-server started with those settings: a job, a batch
file and stream records go through; a client without the password, or without TLS, gets nothing."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis
import requests
import yaml

from batcomputer.settings import Settings
from tests.conftest import Services, free_port, wait_until
from tests.integration.api.test_auth import bearer, create_key
from tests.integration.deploy.test_compose import ENV_EXAMPLE, compose, env_example, project
from tests.integration.worker.test_worker_batches import titanic_table

PASSWORD = "tls-test-password-1234"
RECORD = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (the client trusts it as its CA)."""
    cert, key = folder / "redis.crt", folder / "redis.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def compose_acl(tmp_path: Path) -> list[str]:
    """The redis service's command in docker-compose.yml as compose resolves it, with this test's password."""
    (tmp_path / "compose").mkdir()
    folder = project(tmp_path / "compose")
    (folder / ".env").write_text(ENV_EXAMPLE.read_text().replace(env_example()["REDIS_PASSWORD"], PASSWORD))
    done = compose(folder, "config")
    assert done.returncode == 0, done.stderr
    command: list[str] = yaml.safe_load(done.stdout)["services"]["redis"]["command"]
    assert command[0] == "redis-server" and f">{PASSWORD}" in command
    return command[1:]


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None or shutil.which("docker-compose") is None:
        pytest.fail("openssl and docker-compose are needed (.ci/run installs docker-compose; openssl is Debian's)")
    cert, key = certificate(tmp_path)
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = subprocess.Popen(["redis-server", *compose_acl(tmp_path), "--port", "0", "--tls-port", str(port),
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                               str(cert), "--tls-auth-clients", "no", "--dir", str(data), "--save", ""],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(cert),
                             username="batcomputer", password=PASSWORD)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 30, "redis-server with TLS to answer")
        yield port, cert
    finally:
        server.terminate()
        server.wait(30)


def test_the_stack_runs_on_redis_with_tls_and_the_compose_acl(tls_redis: tuple[int, Path], trained_registry: Settings,
                                                              tmp_path: Path) -> None:
    port, cert = tls_redis
    # What a client without the password, or without TLS, gets: nothing.
    for attempt in (dict(ssl=True, ssl_ca_certs=str(cert)), dict(ssl=True, ssl_ca_certs=str(cert),
                                                                  username="default", password=PASSWORD)):
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):  # no anonymous or default user
            redis.Redis(host="localhost", port=port, **attempt).set("x", "1")  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="localhost", port=port, username="batcomputer", password=PASSWORD,
                    socket_timeout=3).ping()
    admin = redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(cert), username="batcomputer",
                        password=PASSWORD)
    with pytest.raises(redis.exceptions.NoPermissionError):
        admin.flushall()  # the compose user cannot wipe Redis
    # The health check of docker-compose.yml, over TLS here.
    check = subprocess.run(f"redis-cli --tls --cacert {cert} -h localhost -p {port} --user batcomputer ping "
                           "| grep -q PONG", shell=True, env={"REDISCLI_AUTH": PASSWORD, "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0

    url = f"rediss://batcomputer:{PASSWORD}@localhost:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    registry = tmp_path / "registry"
    shutil.copytree(trained_registry.registry, registry)
    settings = dataclasses.replace(trained_registry, redis_url=url, registry=str(registry), profile="production",
                                   keys_file=str(tmp_path / "keys.json"), storage_roots=str(tmp_path / "batches"),
                                   state_dir=str(tmp_path / "state"), key_prefix="bc:")
    token = create_key(settings, "tls", "score")
    logs = tmp_path / "logs"
    logs.mkdir()
    services = Services(settings, logs)
    try:
        services.worker("records")
        services.worker("bulk")
        services.start("stream", "stream", "crime", "--metrics-port=0")
        base = services.gateway(free_port())
        headers = bearer(token)
        job = requests.post(f"{base}/api/models/crime/jobs?wait=20", json=RECORD, headers=headers, timeout=30).json()
        assert job["state"] == "succeeded", job

        table = titanic_table(20_000)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        publish = requests.post(f"{base}/api/models/titanic/batches", data=buffer.getvalue(), timeout=30,
                                headers={**headers, "Content-Type": "application/vnd.apache.parquet"})
        assert publish.status_code == 202, publish.json()
        batch = publish.json()

        def ended() -> dict[str, Any] | None:
            found = requests.get(f"{base}/api/jobs/{batch['id']}", headers=headers, timeout=10).json()
            return found if found["state"] in ("succeeded", "failed", "dead") else None

        assert wait_until(ended, 120, "the batch to end", interval=0.2)["state"] == "succeeded"
        output = requests.get(f"{base}/api/jobs/{batch['id']}/output", headers=headers, timeout=30)
        assert pq.read_table(io.BytesIO(output.content)).num_rows == 20_000

        appended = requests.post(f"{base}/api/models/crime/stream", json={"records": [RECORD] * 50},
                                 headers=headers, timeout=10)
        assert appended.status_code == 202, appended.json()
        out = f"{settings.key_prefix}stream:crime:out"
        wait_until(lambda: admin.xlen(out) >= 50, 60, "the stream's outputs")
        assert requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ready"
        assert services.server_errors() == []
        for log in logs.iterdir():  # nothing the processes do needs a command the ACL refuses
            assert "NOPERM" not in log.read_text(errors="replace"), log.name
    finally:
        services.stop()
