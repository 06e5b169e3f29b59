"""Retraining a person can trust (issue 24's findings), with the retrain flow running against a Prefect server
started as `up` starts it, each run in its own process as a served deployment's would be:
a person's promotion holds against automatic moves unless a challenger beats it by the margin, and a pin holds
against every automatic move until unpinned; two versions within the margin of each other never alternate as
production; concurrent retrains of one model run one at a time and compare with the production they find."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from batcomputer.errors import AliasMoved, AliasPinned
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from cli.launchers.prefect_server import PrefectServer, prefect_env, start_prefect_server
from orchestration.flows import one_at_a_time
from tests.conftest import ROOT, free_port, run_cli, settings_env, wait_until
from tests.integration.orchestration.test_flows import variant
from tests.integration.orchestration.test_flows_server import api

# Each test runs three to five retrain flows one after another on the Prefect server, 20-60 s each (each keeps
# its own subprocess limit); under load the suite's 300 s per test was exceeded once in CI with no flow stuck.
pytestmark = pytest.mark.timeout(900)

RETRAIN = ("import json, sys; from orchestration.flows import retrain; "
           "print('DECISION ' + json.dumps(retrain(model='titanic', policy=sys.argv[1], spec=sys.argv[2] or None, "
           "fetch=False)))")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    started = start_prefect_server(tmp_path_factory.mktemp("prefect"), free_port(), ui=False)
    yield started
    started.stop()


@pytest.fixture
def own(settings: Settings, data_dir: Path) -> Settings:
    return dataclasses.replace(settings, data_dir=str(data_dir))


def retrain(server: PrefectServer, settings: Settings, tmp_path: Path, policy: str = "auto",
            spec: str = "") -> dict[str, Any]:
    """One run of the retrain flow, in its own process, reporting to the server."""
    env = {**settings_env(settings), **prefect_env(tmp_path / "prefect-client", server.api_url)}
    done = subprocess.run([sys.executable, "-c", RETRAIN, policy, spec], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("DECISION "))
    decision: dict[str, Any] = json.loads(line.removeprefix("DECISION "))
    return decision


def production(settings: Settings) -> int:
    return Registry.from_settings(settings).aliases("titanic")["production"]


def test_a_persons_promotion_holds_unless_beaten_by_the_margin_and_a_pin_holds_against_every_automatic_move(
        server: PrefectServer, own: Settings, tmp_path: Path) -> None:
    assert retrain(server, own, tmp_path)["rule"] == "first"
    edited = variant(tmp_path, "titanic", "max_iter = 150", "max_iter = 145")  # a person's edited spec
    published = retrain(server, own, tmp_path, "never", edited)
    assert (published["version"], published["promoted"]) == (2, False)
    registry = Registry.from_settings(own)
    registry.set_alias("titanic", "production", 2, by="alice", reason="the edited spec")  # a person promotes
    scheduled = retrain(server, own, tmp_path)  # the repository's spec, as the schedule runs it
    assert scheduled["version"] == 1 and not scheduled["promoted"] and production(own) == 2
    assert scheduled["rule"] == "within" and "promoted by a person, alice" in scheduled["reasons"][0]
    pinned = run_cli(settings_env(own), "promote", "titanic", "2", "--pin", "--reason", "hold it")
    assert pinned.returncode == 0 and "(pinned)" in pinned.stdout, pinned.stderr
    forced = retrain(server, own, tmp_path, "always")  # not even `always` moves a pinned production
    assert forced["rule"] == "pinned" and not forced["promoted"] and production(own) == 2
    assert "pinned by" in forced["reasons"][0] and "hold it" in forced["reasons"][0]
    assert run_cli(settings_env(own), "unpin", "titanic").returncode == 0
    assert retrain(server, own, tmp_path, "always")["promoted"] and production(own) == 1


def test_two_versions_within_the_margin_of_each_other_never_alternate_as_production(
        server: PrefectServer, own: Settings, tmp_path: Path) -> None:
    other = variant(tmp_path, "titanic", "max_iter = 150", "max_iter = 145")
    runs = [retrain(server, own, tmp_path, "auto", spec) for spec in ("", other, "", other)]
    assert [run["rule"] for run in runs] == ["first", "within", "within", "within"]
    assert [run["version"] for run in runs] == [1, 2, 1, 2] and production(own) == 1
    history = Registry.from_settings(own).history("titanic", "production")
    assert [move["to"] for move in history] == [1]  # production moved once, when there was none


def running_retrains(server: PrefectServer) -> int:
    found = api(server, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}})
    return len(found)


def test_concurrent_retrains_run_one_at_a_time_and_compare_with_the_production_they_find(
        server: PrefectServer, own: Settings, tmp_path: Path) -> None:
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL, temporary_settings

    other = variant(tmp_path, "titanic", "max_iter = 150", "max_iter = 145")
    with temporary_settings({PREFECT_API_URL: server.api_url}), ThreadPoolExecutor(2) as pool:
        limit = one_at_a_time("titanic")
        with concurrency(limit, occupy=1, strict=True):  # the slot is taken: both runs start and must wait
            futures = [pool.submit(retrain, server, own, tmp_path, "auto", spec) for spec in ("", other)]
            wait_until(lambda: running_retrains(server) >= 2, 120, "both retrain runs to be running")
            released = time.time()
        runs = [future.result() for future in futures]
    first, second = sorted(runs, key=lambda run: run["held"][0])
    assert released <= first["held"][0] and first["held"][1] <= second["held"][0]  # one after the other
    assert first["rule"] == "first" and first["champion"] is None and first["promoted"]
    # The second waited for the first's slot and compared with what the first promoted, not with nothing.
    assert second["champion"] == first["version"] and second["rule"] in ("better", "within", "worse")
    assert first["comparisons"] == second["comparisons"] == 1  # it found that production when it began
    assert production(own) == (second["version"] if second["promoted"] else first["version"])


def test_an_alias_moves_only_from_where_its_mover_compared_and_never_automatically_when_pinned(
        own: Settings, titanic_draft: Any) -> None:
    registry = Registry.from_settings(own)
    one = registry.publish(titanic_draft).version
    two = registry.publish(dataclasses.replace(titanic_draft, metrics={**titanic_draft.metrics, "tag": 2})).version
    registry.set_alias("titanic", "production", one)
    with pytest.raises(AliasMoved):
        registry.set_alias("titanic", "production", two, expect=None)  # compared when there was none
    registry.set_alias("titanic", "production", two, expect=one, automatic=True)
    registry.set_alias("titanic", "production", one, by="alice", pin=True)
    with pytest.raises(AliasPinned):
        registry.set_alias("titanic", "production", two, expect=one, automatic=True)
    assert registry.pin("titanic", "production")["by"] == "alice"
    registry.set_alias("titanic", "production", two, by="bob")  # a person may move it: the pin stays
    assert registry.pin("titanic", "production")["by"] == "alice"
    registry.unpin("titanic", "production", by="alice")
    assert registry.pin("titanic", "production") is None
    registry.set_alias("titanic", "production", one, expect=two, automatic=True)
