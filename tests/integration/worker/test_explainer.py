"""The explainer process beside each scoring process: its explanations equal in-process ones, it runs at the
configured lower CPU priority, a caller stopped by its time limit replaces it, its errors reach the caller as
they were raised, and it ends with the process that started it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from batcomputer.errors import NotExplainable, TimedOut
from batcomputer.models.explain import explain
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import wait_until
from tests.pipelines import hanging
from worker.explainer import Explainer
from worker.limits import Limits, Watchdog

RECORDS = [{"pclass": p, "sex": s, "age": a, "sibsp": 0, "parch": 1}
           for p in (1, 3) for s in ("male", "female") for a in (4.0, 30.0, None)]
HANG_AGE = 99.0


@pytest.fixture(scope="module")
def settings(titanic_draft: Any, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Shipped settings with a registry of their own, titanic published in it."""
    settings = Settings(registry=str(tmp_path_factory.mktemp("explainer") / "registry"))
    registry = Registry.from_settings(settings)
    registry.set_alias("titanic", "production", registry.publish(titanic_draft).version)
    return settings


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def autogroup_of(pid: str) -> list[str]:
    """``['/autogroup-N', 'nice', 'K']``, or empty where the kernel groups the process otherwise."""
    path = Path(f"/proc/{pid}/autogroup")
    return path.read_text().split() if path.exists() else []


def test_explanations_equal_in_process_ones_and_come_from_a_child_at_lower_priority(settings: Settings) -> None:
    bundle = Registry.from_settings(settings).bundle("titanic", None, pipeline=True)
    explainer = Explainer(settings)
    try:
        got = explainer.explain(bundle, RECORDS)
        expected = explain(bundle, RECORDS)
        assert len(got) == len(RECORDS)
        for mine, theirs in zip(got, expected, strict=True):
            assert mine["baseline"] == theirs["baseline"]
            for output, contributions in theirs["contributions"].items():
                for name, value in contributions.items():
                    assert abs(mine["contributions"][output][name] - value) < 1e-12
        child = explainer.pid
        assert child is not None and child != os.getpid()
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, ours + settings.explain_niceness)
        theirs_group, ours_group = autogroup_of(str(child)), autogroup_of("self")
        if theirs_group:  # a session of its own, weighed as lightly (else it shares the worker's weight)
            assert theirs_group[-1] == str(settings.explain_niceness)
            if ours_group:  # empty where this process sits in a cgroup of its own (seen in CI)
                assert theirs_group[0] != ours_group[0]
        assert explainer.explain(bundle, RECORDS[:1])[0]["baseline"] == expected[0]["baseline"]
        assert explainer.pid == child  # one child serves every request
    finally:
        explainer.close()
    assert not alive(child)


def test_a_caller_stopped_by_its_time_limit_replaces_the_hanging_child(titanic_draft: Any,
                                                                      redis_base_url: str, tmp_path: Path) -> None:
    settings = Settings(registry=str(tmp_path / "registry"))
    own = Registry.from_settings(settings)
    flag = f"test-explainer-hang-{uuid.uuid4().hex}"
    redis.Redis.from_url(redis_base_url).set(flag, 1, ex=600)
    hung = own.publish(dataclasses.replace(titanic_draft, pipeline=hanging(
        titanic_draft.pipeline, "age", HANG_AGE, redis_base_url, flag))).version
    bundle = own.bundle("titanic", hung, pipeline=False)
    limits = Limits.from_settings(settings)
    watchdog = Watchdog(limits.grace)
    explainer = Explainer(settings)
    try:
        assert explainer.explain(bundle, RECORDS[:2])  # no hanging value: explained
        first = explainer.pid
        limit = limits.of("records", bundle, 2.0, explained=1)  # a client's ?timeout=2
        with pytest.raises(TimedOut):
            watchdog.run(lambda: explainer.explain(bundle, [{**RECORDS[0], "age": HANG_AGE}]), limit,
                         "explaining a record that hangs")
        assert first is not None and not alive(first)
        redis.Redis.from_url(redis_base_url).delete(flag)  # the cause is fixed: the next request is explained
        assert explainer.explain(bundle, [{**RECORDS[0], "age": HANG_AGE}])
        assert explainer.pid not in (None, first)
    finally:
        explainer.close()
        redis.Redis.from_url(redis_base_url).delete(flag)


def test_errors_reach_the_caller_as_raised_and_the_child_lives_on(titanic_draft: Any, tmp_path: Path) -> None:
    settings = Settings(registry=str(tmp_path / "registry"))
    own = Registry.from_settings(settings)
    old = own.publish(dataclasses.replace(titanic_draft, background=None)).version  # no background sample
    explainer = Explainer(settings)
    try:
        with pytest.raises(NotExplainable) as raised:
            explainer.explain(own.bundle("titanic", old, pipeline=False), RECORDS[:1])
        assert raised.value.status == 422 and "titanic@1" in raised.value.detail
        child = explainer.pid
        with pytest.raises(NotExplainable):
            explainer.explain(own.bundle("titanic", old, pipeline=False), RECORDS[:1])
        assert explainer.pid == child
    finally:
        explainer.close()


def test_the_child_ends_with_the_process_that_started_it(settings: Settings) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from batcomputer.settings import Settings; from batcomputer.models.registry import Registry;"
            "from worker.explainer import Explainer;"
            f"s = Settings(registry={settings.registry!r}); b = Registry.from_settings(s).bundle('titanic', None);"
            f"e = Explainer(s); e.explain(b, {RECORDS[:1]!r}); print(e.pid, flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[3], text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()  # no chance to close anything
        parent.wait()
        wait_until(lambda: not alive(child), 30, "the explainer to end after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()
