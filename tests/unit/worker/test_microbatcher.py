"""Micro-batching: waiting records are scored together, one call per model version, results per record.

The batcher takes any score function: here a stub that doubles a number, so that what is checked is the
batching (who waits with whom, what fails together, when a window closes), not a model.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from batcomputer.models.bundle import Bundle
from batcomputer.models.schema import Schema
from worker.microbatcher import Batcher

RECORDS = [{"x": float(i)} for i in range(6)]


def bundle(version: int) -> Bundle:
    return Bundle(model="stub", version=version, sha256=f"v{version}", manifest={},
                  schema=Schema("stub", (), ("y",), ("y",)), metrics={})


def doubled(b: Bundle, records: list[dict[str, Any]], limit: float | None = None) -> list[dict[str, Any]]:
    return [{"version": b.version, "y": record["x"] * 2} for record in records]


class Clock:
    """A clock the test moves; ``read(n)`` waits until the batcher has looked at it ``n`` times."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.reads = 0
        self.changed = threading.Condition()

    def __call__(self) -> float:
        with self.changed:
            self.reads += 1
            self.changed.notify_all()
            return self.now

    def read(self, times: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.reads >= times, 10), "the batcher never read the clock"


def test_records_waiting_together_are_scored_in_one_call_each_per_version() -> None:
    calls: list[tuple[int, int]] = []
    scoring, gate = threading.Event(), threading.Event()

    def held(b: Bundle, records: list[dict[str, Any]], limit: float | None = None) -> list[dict[str, Any]]:
        calls.append((b.version, len(records)))
        scoring.set()
        gate.wait(10)  # hold the first batch so that the rest queue up behind it
        return doubled(b, records)

    batcher = Batcher(held, max_records=64, window_seconds=0)
    v1, v2 = bundle(1), bundle(2)
    first = batcher.submit(v1, RECORDS[0])
    assert scoring.wait(10)
    futures = [batcher.submit(v1 if i % 2 else v2, record) for i, record in enumerate(RECORDS)]
    gate.set()
    assert first.result(10) == {"version": 1, "y": 0.0}
    assert [f.result(10) for f in futures] == [{"version": 1 if i % 2 else 2, "y": 2 * i} for i in range(6)]
    assert calls[0] == (1, 1)
    assert sorted(calls[1:]) == [(1, 3), (2, 3)]
    assert batcher.stats.records == 7 and batcher.stats.largest == 3


def test_a_batch_never_exceeds_max_records() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def held(b: Bundle, records: list[dict[str, Any]], limit: float | None = None) -> list[dict[str, Any]]:
        sizes.append(len(records))
        gate.wait(10)
        return doubled(b, records)

    batcher = Batcher(held, max_records=4, window_seconds=0)
    futures = [batcher.submit(bundle(1), {"x": float(i)}) for i in range(13)]
    gate.set()
    assert [f.result(10)["y"] for f in futures] == [2.0 * i for i in range(13)]
    assert max(sizes) <= 4 and sum(sizes) == 13


def test_a_window_holds_the_batch_open_until_the_clock_passes_it() -> None:
    clock, calls = Clock(), []
    batcher = Batcher(lambda b, r, _: calls.append(len(r)) or doubled(b, r), max_records=64, window_seconds=60,
                      clock=clock)
    first = batcher.submit(bundle(1), RECORDS[0])
    clock.read(3)  # the thread started (1), set the window's deadline (2) and is waiting out the rest of it (3)
    second = batcher.submit(bundle(1), RECORDS[1])  # inside the window: joins the first
    clock.read(4)
    assert calls == [] and not first.done()  # the window is still open: nothing scored yet
    clock.now += 60  # the window has passed: the next arrival closes the batch and waits for the one after
    third = batcher.submit(bundle(1), RECORDS[2])
    assert [f.result(10)["y"] for f in (first, second, third)] == [0.0, 2.0, 4.0]
    assert calls == [3]


def test_a_failed_batch_fails_every_waiting_record() -> None:
    def broken(b: Bundle, records: list[dict[str, Any]], limit: float | None = None) -> list[dict[str, Any]]:
        raise ValueError("the model cannot score these")

    batcher = Batcher(broken, max_records=8, window_seconds=0.01)
    futures = [batcher.submit(bundle(1), r) for r in RECORDS[:3]]
    for future in futures:
        with pytest.raises(ValueError, match="cannot score"):
            future.result(10)


class Stop(BaseException):
    """Something that kills a thread outright (as SystemExit would)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies on purpose
def test_a_dead_batcher_thread_fails_its_records_and_the_next_submit_starts_a_new_one() -> None:
    calls = {"n": 0}

    def dies_once(b: Bundle, records: list[dict[str, Any]], limit: float | None = None) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Stop()
        return doubled(b, records)

    batcher = Batcher(dies_once, max_records=8, window_seconds=0)
    doomed = batcher.submit(bundle(1), RECORDS[0])
    with pytest.raises(RuntimeError, match="micro-batcher stopped"):
        doomed.result(10)
    batcher._thread.join(10)
    assert not batcher._thread.is_alive()
    revived = batcher.submit(bundle(1), RECORDS[1])
    assert revived.result(10) == {"version": 1, "y": 2.0}
    assert batcher.restarts == 1


def test_a_model_returning_too_few_results_fails_the_batch_not_the_thread() -> None:
    gate = threading.Event()

    def short(b: Bundle, records: list[dict[str, Any]], limit: float | None = None) -> list[dict[str, Any]]:
        gate.wait(10)
        return doubled(b, records)[:-1] if len(records) > 1 else doubled(b, records)

    batcher = Batcher(short, 8, 0)
    futures = [batcher.submit(bundle(1), r) for r in RECORDS[:3]]
    gate.set()
    failed = [f for f in futures if f.exception(10) is not None]
    assert failed and all("results for" in str(f.exception()) for f in failed)
    assert batcher.submit(bundle(1), RECORDS[0]).result(10) == {"version": 1, "y": 0.0}
