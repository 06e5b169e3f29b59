"""Time limits on scoring: a watchdog abandons a call past its soft limit and replaces the process past its hard
limit; ``settle`` splits timed-out or failing work until only the records that hang or raise are left out.

Soft: the call is interrupted where it runs. In the main thread (a bulk worker's pool process, a stream
consumer) a SIGALRM handler raises, which also breaks blocking calls such as ``time.sleep``; in another thread (a
record worker's micro-batcher and task threads) the exception is set on that thread asynchronously, and is raised
at its next Python instruction. Hard: a call still running ``grace`` seconds after its soft limit (stuck in C
code, or in a blocking call outside the main thread) cannot be stopped from inside, so the process exits and is
replaced (a record worker by its supervisor, a pool process by Celery's pool, a consumer by its supervisor); the
jobs it held go back to the queue by the lease, as after any lost worker.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from batcomputer.errors import BatcomputerError, TimedOut

log = logging.getLogger("batcomputer.limits")
EXIT_HUNG = 75  # the exit code of a process replaced because a call in it would not stop
SPLIT = 16  # pieces a timed-out or failing piece of work is split into while its culprits are sought

T = TypeVar("T")
R = TypeVar("R")


class _Expired(BaseException):  # a BaseException: no `except Exception` in the scoring code swallows it
    """Raised inside a call whose soft limit passed; turned into ``TimedOut`` where the call was guarded."""


@dataclass(order=True)
class _Token:
    deadline: float
    order: int
    thread: int = field(compare=False)
    seconds: float = field(compare=False)
    what: str = field(compare=False)
    fired: bool = field(default=False, compare=False)
    done: bool = field(default=False, compare=False)


def _exit_hung(what: str) -> None:
    log.critical("%s did not stop after its time limit and grace; replacing this process", what)
    logging.shutdown()
    os._exit(EXIT_HUNG)


class Watchdog:
    """One per process: a thread that wakes at the earliest deadline of the calls it guards.

    ``grace``: seconds past a soft limit before ``on_hung`` (by default, the process exits with ``EXIT_HUNG``).
    ``clock``: monotonic seconds (injected by tests)."""

    def __init__(self, grace: float, on_hung: Callable[[str], None] = _exit_hung,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.on_hung = on_hung
        self.clock = clock
        self.timeouts = 0  # soft limits that fired in this process
        self._heap: list[_Token] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._active: dict[int, _Token] = {}  # thread ident -> the token its current guarded call holds
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, call: Callable[[], R], seconds: float, what: str) -> R:
        """``call()``, abandoned with ``TimedOut`` (naming ``what`` and the limit) if it runs past ``seconds``."""
        token = self._arm(seconds, what)
        try:
            try:
                return call()
            finally:
                self._disarm(token)
        except _Expired:
            self._disarm(token)  # it may have come while the first disarm ran
            raise TimedOut(f"{what} ran past its time limit of {seconds:g} s and was stopped",
                           limit_seconds=seconds) from None

    def _arm(self, seconds: float, what: str) -> _Token:
        ident = threading.get_ident()
        if ident == threading.main_thread().ident and signal.getsignal(signal.SIGALRM) is not _on_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
        token = _Token(self.clock() + seconds, next(self._order), ident, seconds, what)
        with self._cond:
            self._start()
            self._active[ident] = token
            _ALARMS[ident] = token
            heapq.heappush(self._heap, token)
            self._cond.notify()
        return token

    def _disarm(self, token: _Token) -> None:
        with self._cond:
            if token.done:
                return
            token.done = True
            if self._active.get(token.thread) is token:
                del self._active[token.thread]
                _ALARMS.pop(token.thread, None)
            if token.fired and token.thread != threading.main_thread().ident:
                # An exception set on this thread but not raised yet must not surface outside the call.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(token.thread), None)

    def _start(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()  # a forked pool process needs its own thread
            self._heap = [t for t in self._heap if not t.done]
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                token = self._heap[0]
                now = self.clock()
                if now < token.deadline:
                    self._cond.wait(token.deadline - now)
                    continue
                heapq.heappop(self._heap)
                if not token.fired:
                    token.fired = True
                    self.timeouts += 1
                    self._interrupt(token)
                    token.deadline = now + self.grace  # back on the heap for the hard limit
                    heapq.heappush(self._heap, token)
                else:
                    self._cond.release()
                    try:
                        self.on_hung(f"{token.what} (time limit {token.seconds:g} s)")
                    finally:
                        self._cond.acquire()

    @staticmethod
    def _interrupt(token: _Token) -> None:
        if token.thread == threading.main_thread().ident:
            signal.pthread_kill(token.thread, signal.SIGALRM)
        else:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(token.thread), ctypes.py_object(_Expired))


_ALARMS: dict[int, _Token] = {}  # the main thread's guarded call, for the SIGALRM handler


def _on_alarm(_signum: int, _frame: Any) -> None:
    token = _ALARMS.get(threading.get_ident())
    if token is not None and token.fired and not token.done:
        raise _Expired()


@dataclass(frozen=True)
class Piece(Generic[R]):
    """Rows ``start`` to ``stop`` (exclusive) of what ``settle`` scored: their result, or why they were left out."""

    start: int
    stop: int
    result: R | None = None
    error: BatcomputerError | None = None


def settle(score: Callable[[int, int], R], count: int, first_limit: float, limit: Callable[[int], float],
           watchdog: Watchdog, what: str, describe: Callable[[Exception], BatcomputerError],
           split: int = SPLIT) -> list[Piece[R]]:
    """Score rows ``0..count`` (``score(start, stop)`` scores a slice) under ``first_limit``; if that times out or
    raises, split the rows into ``split`` pieces, each under ``limit(rows)``, and again until the rows that hang
    or raise are alone, so one bad row never fails the others. When every piece of a split fails the same way,
    the cause is not in the rows (a model that hangs or raises on everything): those pieces fail whole, without
    more splitting. Returns the pieces in row order."""
    pieces: list[Piece[R]] = []

    def attempt(start: int, stop: int, seconds: float) -> Piece[R]:
        rows = stop - start
        try:
            return Piece(start, stop, watchdog.run(lambda: score(start, stop), seconds, f"{what} ({rows:,} rows)"))
        except TimedOut:
            alone = f", and {seconds:g} s scored apart from the others" if seconds != first_limit else ""
            return Piece(start, stop, error=TimedOut(
                f"{what}: scoring ran past its time limit of {first_limit:g} s{alone}, and was stopped",
                limit_seconds=first_limit))
        except Exception as exc:  # the model's own error, reported for these rows only
            return Piece(start, stop, error=describe(exc))

    def go(piece: Piece[R]) -> None:
        if piece.error is None or piece.stop - piece.start == 1:
            pieces.append(piece)
            return
        size = -(-(piece.stop - piece.start) // split)
        parts = [attempt(a, min(a + size, piece.stop), limit(min(a + size, piece.stop) - a))
                 for a in range(piece.start, piece.stop, size)]
        if len(parts) > 1 and all(p.error is not None and p.error.code == piece.error.code for p in parts):
            pieces.extend(parts)  # everything fails alike: the model, not these rows
            return
        for part in parts:
            go(part)

    go(attempt(0, count, first_limit))
    return pieces


def timed_out(pieces: Sequence[Piece[Any]]) -> int:
    """Rows of ``pieces`` left out because they ran past their limit."""
    return sum(p.stop - p.start for p in pieces if isinstance(p.error, TimedOut))


@dataclass(frozen=True)
class Limits:
    """The time limits of each kind of work, from settings, a model's spec (``[timeouts]``) and a request."""

    records: float
    chunk: float
    stream: float
    floor: float
    row: float  # seconds per row
    grace: float

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.timeout_records_seconds, settings.timeout_chunk_seconds, settings.timeout_stream_seconds,
                   settings.timeout_floor_seconds, settings.timeout_row_ms / 1000, settings.timeout_grace_seconds)

    def of(self, kind: str, bundle: Any, requested: float | None = None, rows: int | None = None,
           explained: int = 0) -> float:
        """The limit of one call of ``kind`` (records, chunk or stream): the request's, else the model's, else
        the setting; a chunk's default also shrinks with its rows (``rows``). ``explained``: records the call
        also explains, each scored against every coalition of background rows (the limit grows by the row
        allowance for those rows)."""
        if requested:
            return requested
        own = ((getattr(bundle, "manifest", None) or {}).get("spec") or {}).get("timeouts") or {}
        if kind in own:
            return float(own[kind])
        base: float = getattr(self, kind)
        limit = min(base, self.piece(rows)) if rows is not None else base
        if explained:
            from batcomputer.models.explain import rows_per_record

            limit += explained * rows_per_record(bundle) * self.row
        return limit

    def piece(self, rows: int) -> float:
        """The limit of a piece of ``rows`` rows split off work that timed out or failed."""
        return self.floor + rows * self.row


def failed_alike(pieces: Sequence[Piece[Any]]) -> BatcomputerError | None:
    """The error of ``pieces`` when every one of them failed with the same code (the model, not some rows)."""
    errors = [p.error for p in pieces]
    first = errors[0] if errors else None
    if first is not None and all(e is not None and e.code == first.code for e in errors):
        return first
    return None
