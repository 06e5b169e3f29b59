"""The flows against a real Prefect server: deployments served with a short schedule run by themselves,
the gateway triggers a retrain on the server, and everything stops cleanly; the server on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from cli.launchers.prefect_server import PrefectServer, prefect_env, start_prefect_server
from tests.conftest import free_port, private_settings, settings_env, wait_until

POSTGRES = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


def api(server: PrefectServer, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(f"{server.api_url}{path}", data=json.dumps(body or {}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    started = start_prefect_server(tmp_path / "prefect", free_port(), ui=False)
    yield started
    started.stop()


def test_a_served_deployment_runs_on_its_schedule_and_the_gateway_triggers_a_retrain(
        server: PrefectServer, settings: Settings, data_dir: Path, tmp_path: Path, redis_base_url: str) -> None:
    own = dataclasses.replace(private_settings(settings, redis_base_url), data_dir=str(data_dir),
                              prefect_api_url=server.api_url)
    env = {**settings_env(own), **prefect_env(tmp_path / "prefect", server.api_url)}
    log = (tmp_path / "serve.log").open("ab")
    serve = subprocess.Popen([str(Path(sys.executable).parent / "batcomputer"), "flows", "serve", "--interval",
                              "15", "--model", "titanic"], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        def completed_runs() -> list[dict[str, Any]]:
            runs = api(server, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
            return [run for run in runs if run.get("deployment_id")]

        wait_until(lambda: completed_runs() or None, 180, "a scheduled retrain run to complete")
        registry = Registry.from_settings(own)
        assert registry.aliases("titanic")["production"] == 1  # the scheduled run trained and promoted
        deployments = {d["name"]: d for d in api(server, "/deployments/filter", {})}
        assert {"retrain-titanic", "retrain", "promote", "rollback", "score-batch"} <= set(deployments)
        assert deployments["retrain-titanic"]["schedules"]

        from api.app import create_app

        client = create_app(own).test_client()
        response = client.post("/api/models/titanic/retrain", json={"policy": "never"})
        assert response.status_code == 202, response.get_json()
        run_id = response.get_json()["flow_run_id"]
        uuid.UUID(run_id)

        def finished() -> str | None:
            with urllib.request.urlopen(f"{server.api_url}/flow_runs/{run_id}", timeout=10) as reply:
                state = json.loads(reply.read())["state"]["type"]
            return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

        assert wait_until(finished, 180, "the triggered retrain to finish") == "COMPLETED"
        runs = client.get("/api/models/titanic/retrains").get_json()["runs"]  # what the models page shows
        assert run_id in [r["flow_run_id"] for r in runs] and all(r["started"] for r in runs)
        triggered = next(r for r in runs if r["flow_run_id"] == run_id)
        assert triggered["state"] == "COMPLETED" and triggered["policy"] == "never"
        assert triggered["decision"]["headline"] == "Retrain titanic: not promoted"
        assert triggered["decision"]["reasons"] and not triggered["decision"]["promoted"]
        assert triggered["decision"]["rule"] == "never"
        assert any(r["decision"] and r["decision"]["promoted"] for r in runs)  # the scheduled run promoted v1
        refused = client.post("/api/models/titanic/retrain", json={"policy": "sometimes"})
        assert refused.status_code == 400 and refused.get_json()["field"] == "policy"
    finally:
        os.killpg(serve.pid, signal.SIGTERM)  # the served flows first, then the server (the fixture)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            pytest.fail("flows serve did not stop on SIGTERM")
    assert serve.returncode is not None


def _in_own_loop(statement: str | None) -> None:
    """Run one statement (None: just connect) on PostgreSQL, on an event loop of its own in a thread of its
    own (Prefect's harness may hold this thread's loop)."""
    import asyncio
    import threading

    import asyncpg

    failure: list[BaseException] = []

    async def work() -> None:
        connection = await asyncpg.connect(POSTGRES, timeout=5)
        try:
            if statement:
                await connection.execute(statement)
        finally:
            await connection.close()

    def target() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if failure:
        raise failure[0]


def _postgres_answers() -> bool:
    try:
        _in_own_loop(None)
        return True
    except Exception:
        return False


def test_the_server_runs_on_postgresql(tmp_path: Path) -> None:
    if not _postgres_answers():
        pytest.skip(f"no PostgreSQL answers at {POSTGRES}")
    database = f"prefect_test_{uuid.uuid4().hex[:8]}"
    _in_own_loop(f"CREATE DATABASE {database}")
    url = f"postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/{database}"
    try:
        server = start_prefect_server(tmp_path / "prefect", free_port(), database_url=url, ui=False)
        try:
            flow = api(server, "/flows/", {"name": "postgres-check"})
            assert api(server, "/flows/filter", {})[0]["id"] == flow["id"]
        finally:
            server.stop()
    finally:
        _in_own_loop(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
