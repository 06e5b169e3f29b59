"""Time limits: the watchdog stops a call in the main thread and in another thread, replaces a call that will not
stop, and ``settle`` leaves out exactly the rows that hang or raise."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from batcomputer.errors import BatcomputerError, ModelError, TimedOut
from worker.limits import Limits, Watchdog, failed_alike, settle, timed_out


def hang() -> None:
    """A call that never ends by itself: a Python loop around a blocking call."""
    while True:
        time.sleep(0.01)


def test_a_call_in_the_main_thread_is_stopped_even_inside_a_blocking_call() -> None:
    watchdog = Watchdog(grace=60)
    began = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        watchdog.run(lambda: time.sleep(30), 0.2, "sleeping")
    assert time.monotonic() - began < 5
    assert "sleeping" in caught.value.detail and "0.2 s" in caught.value.detail
    assert caught.value.extra["limit_seconds"] == 0.2
    assert watchdog.run(lambda: 42, 5, "answering") == 42  # the next call is not disturbed


def test_a_call_in_another_thread_is_stopped_and_the_thread_goes_on() -> None:
    watchdog = Watchdog(grace=60)
    outcome: list[object] = []

    def work() -> None:
        try:
            watchdog.run(hang, 0.2, "hanging")
        except TimedOut as exc:
            outcome.append(exc)
        outcome.append(watchdog.run(lambda: "after", 5, "answering"))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], TimedOut) and outcome[1] == "after"


def test_a_call_that_finishes_in_time_is_never_interrupted_later() -> None:
    watchdog = Watchdog(grace=60)
    for _ in range(200):
        assert watchdog.run(lambda: sum(range(100)), 0.05, "adding") == 4950
    time.sleep(0.2)  # past every deadline armed above: nothing may fire into this thread now
    assert watchdog.timeouts == 0


def test_a_call_that_will_not_stop_is_reported_as_hung_after_the_grace() -> None:
    hung: list[str] = []
    released = threading.Event()
    watchdog = Watchdog(grace=0.2, on_hung=lambda what: (hung.append(what), released.set()))

    def stuck() -> None:  # swallows the soft stop, as code stuck in C would not even see it
        while not released.is_set():
            try:
                time.sleep(0.01)
            except BaseException:  # the point: it refuses to stop
                continue

    thread = threading.Thread(target=lambda: watchdog.run(stuck, 0.1, "stubborn"), daemon=True)
    thread.start()
    assert released.wait(10)
    thread.join(10)
    assert hung == ["stubborn (time limit 0.1 s)"]


def rows_scored(bad: set[int], hanging: set[int]) -> tuple[list[int], object]:
    calls: list[int] = []

    def score(start: int, stop: int) -> list[int]:
        calls.append(stop - start)
        rows = set(range(start, stop))
        if rows & hanging:
            hang()
        if rows & bad:
            raise ValueError(f"bad row in {start}..{stop}")
        return [row * 10 for row in range(start, stop)]

    return calls, score


def flatten(pieces: Sequence[object]) -> list[object]:
    out: list[object] = []
    for piece in pieces:
        rows = piece.stop - piece.start  # type: ignore[attr-defined]
        out += piece.result if piece.result is not None else [piece.error.code] * rows  # type: ignore[attr-defined]
    return out


def describe(exc: Exception) -> BatcomputerError:
    return ModelError(str(exc))


def test_settle_leaves_out_only_the_rows_that_raise_or_hang() -> None:
    calls, score = rows_scored(bad={7}, hanging={300})
    pieces = settle(score, 1000, 0.3, lambda rows: 0.3, Watchdog(grace=60), "scoring", describe)  # type: ignore[arg-type]
    out = flatten(pieces)
    assert out[7] == "scoring_error" and out[300] == "timeout"
    assert [v for i, v in enumerate(out) if i not in (7, 300)] == [i * 10 for i in range(1000) if i not in (7, 300)]
    assert timed_out(pieces) == 1 and failed_alike(pieces) is None
    assert len(calls) < 100  # found by splitting, not by scoring row after row


def test_a_model_that_fails_on_everything_fails_alike_without_splitting_to_single_rows() -> None:
    calls, score = rows_scored(bad=set(range(1000)), hanging=set())
    pieces = settle(score, 1000, 5, lambda rows: 5, Watchdog(grace=60), "scoring", describe)  # type: ignore[arg-type]
    assert isinstance(failed_alike(pieces), ModelError)
    assert len(calls) == 17  # the whole, then its 16 pieces


def test_limits_come_from_the_request_then_the_model_then_settings_and_shrink_with_rows() -> None:
    limits = Limits(records=30, chunk=600, stream=30, floor=2, row=0.00025, grace=10)

    class Bundle:
        manifest = {"spec": {"timeouts": {"records": 90}}}

    assert limits.of("records", Bundle(), 5) == 5
    assert limits.of("records", Bundle()) == 90
    assert limits.of("stream", Bundle()) == 30
    assert limits.of("chunk", None, rows=200_000) == 52
    assert limits.of("chunk", None, rows=10_000_000) == 600
    assert limits.piece(1) == pytest.approx(2.00025)
