"""Turns at scoring: one slot at a time, and waiting keys served in turn, whatever order they came in."""

from __future__ import annotations

import contextlib
import threading

from tests.conftest import wait_until
from worker.turns import Turns


def served_in_order(turns: Turns, holder: str, owners: list[str]) -> list[str]:
    """The owners served, in order, when callers of ``owners`` arrive (in that order) while ``holder`` holds the
    only turn, and it is then released."""
    served: list[str] = []
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with turns.turn(holder):
            holding.set()
            release.wait(10)

    def take(owner: str) -> None:
        with turns.turn(owner):
            served.append(owner)

    first = threading.Thread(target=hold)
    first.start()
    holding.wait(10)
    callers = [threading.Thread(target=take, args=(owner,)) for owner in owners]
    for count, caller in enumerate(callers, start=1):
        caller.start()
        wait_until(lambda count=count: turns.waiting() == count, 10, "the caller to wait")
    release.set()
    for thread in [first, *callers]:
        thread.join(10)
    return served


def test_waiting_keys_take_turns_and_one_keys_many_callers_never_starve_another() -> None:
    turns = Turns(1)
    served = served_in_order(turns, "flood", ["flood"] * 5 + ["quiet"])  # the quiet key arrives last
    assert served[:2] == ["flood", "quiet"]  # the flood's next caller, then the quiet key: not after all five
    assert served.count("flood") == 5 and turns.waiting() == 0


def test_slots_bound_how_many_hold_a_turn_at_once() -> None:
    turns = Turns(2)
    inside = 0
    most = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=10)

    def take(owner: str) -> None:
        nonlocal inside, most
        with turns.turn(owner):
            with lock:
                inside += 1
                most = max(most, inside)
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()  # two can be inside together
            with lock:
                inside -= 1

    threads = [threading.Thread(target=take, args=(f"k{i % 3}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert most == 2 and turns.waiting() == 0
