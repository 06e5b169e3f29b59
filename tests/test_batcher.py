"""Micro-batching: waiting records are scored together, one call per model version, results per record."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from batcomputer.models.bundle import Bundle, Draft
from batcomputer.models.scoring import score
from worker.microbatcher import Batcher

RECORDS = [{"pclass": c, "sex": s, "age": 30.0, "sibsp": 0, "parch": 0} for c in (1, 2, 3) for s in ("female", "male")]


def bundle_of(draft: Draft, version: int) -> Bundle:
    return Bundle(model="titanic", version=version, sha256=f"v{version}", manifest={}, schema=draft.schema,
                  metrics={}, pipeline=draft.pipeline)


def test_records_waiting_together_are_scored_in_one_call_each_per_version(titanic_draft: Draft) -> None:
    calls: list[tuple[int, int]] = []
    scoring, gate = threading.Event(), threading.Event()

    def counted(bundle: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append((bundle.version, len(records)))
        scoring.set()
        gate.wait(10)  # hold the first batch so that the rest queue up behind it
        return score(bundle, records)

    batcher = Batcher(counted, max_records=64, window_seconds=0)
    v1, v2 = bundle_of(titanic_draft, 1), bundle_of(titanic_draft, 2)
    first = batcher.submit(v1, RECORDS[0])
    assert scoring.wait(10)
    futures = [batcher.submit(v1 if i % 2 else v2, record) for i, record in enumerate(RECORDS)]
    gate.set()
    results = [f.result(10) for f in futures]
    assert first.result(10) == score(v1, [RECORDS[0]])[0]
    assert results == [score(v1, [r])[0] for r in RECORDS]  # same figures as one by one, in order
    assert calls[0] == (1, 1)
    assert sorted(calls[1:]) == [(1, 3), (2, 3)]
    assert batcher.stats.records == 7 and batcher.stats.largest == 3


def test_a_failed_batch_fails_every_waiting_record(titanic_draft: Draft) -> None:
    broken = dataclasses.replace(bundle_of(titanic_draft, 1), pipeline=None)
    batcher = Batcher(score, max_records=8, window_seconds=0.01)
    futures = [batcher.submit(broken, r) for r in RECORDS[:3]]
    for future in futures:
        with pytest.raises(AttributeError):
            future.result(10)


class Stop(BaseException):
    """Something that kills a thread outright (as SystemExit would)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies on purpose
def test_a_dead_batcher_thread_fails_its_records_and_the_next_submit_starts_a_new_one(titanic_draft: Draft) -> None:
    bundle = bundle_of(titanic_draft, 1)
    calls = {"n": 0}

    def dies_once(b: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Stop()
        return score(b, records)

    batcher = Batcher(dies_once, max_records=8, window_seconds=0)
    doomed = batcher.submit(bundle, RECORDS[0])
    with pytest.raises(RuntimeError, match="micro-batcher stopped"):
        doomed.result(10)
    batcher._thread.join(10)
    assert not batcher._thread.is_alive()
    revived = batcher.submit(bundle, RECORDS[1])
    assert revived.result(10) == score(bundle, [RECORDS[1]])[0]
    assert batcher.restarts == 1


def test_a_model_returning_too_few_results_fails_the_batch_not_the_thread(titanic_draft: Draft) -> None:
    bundle = bundle_of(titanic_draft, 1)
    short = Batcher(lambda b, records: score(b, records)[:-1] if len(records) > 1 else score(b, records), 8, 0.05)
    futures = [short.submit(bundle, r) for r in RECORDS[:3]]
    for future in futures:
        with pytest.raises(RuntimeError, match="results for"):
            future.result(10)
    assert short.submit(bundle, RECORDS[0]).result(10) == score(bundle, [RECORDS[0]])[0]
