"""Turns at scoring inside one worker process: keys take turns, so one key's many jobs in flight never starve
another key's job of the interpreter.

A record worker runs many threads (jobs wait there for their micro-batch or their Redis round trips), but
scoring holds the GIL: when 64 threads score one key's lists at once, a job of another key that arrives waits
behind all of them. ``Turns`` lets ``slots`` scoring calls run at a time and hands the next turn to the key
that has waited longest for one (round robin between keys; first come, first served within a key).
Explanations take no turns: they are computed by the process's explainer (``worker.explainer``), which the
kernel runs at a lower priority.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """At most ``slots`` holders at once; waiting owners are served in turn. A caller that finds a free slot
    and nobody waiting takes it at once; the others each wait on their own event, set by the caller that hands
    them the turn (so a release wakes exactly one waiter, not every thread in the pool)."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[threading.Event]] = {}  # per owner, its callers in arrival order
        self._ring: deque[str] = deque()  # owners with callers waiting, the next to be served first
        self._busy = 0

    @contextmanager
    def turn(self, owner: str) -> Iterator[None]:
        """Wait for ``owner``'s turn, hold it for the block."""
        with self._lock:
            if self._busy < self.slots and not self._ring:
                self._busy += 1
                event = None
            else:
                event = threading.Event()
                line = self._waiting.setdefault(owner, deque())
                line.append(event)
                if len(line) == 1:
                    self._ring.append(owner)
        if event is not None:
            event.wait()  # the caller that set it counted this one busy already
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._hand_on()

    def _hand_on(self) -> None:
        """Give free slots to the next owners in the ring (the lock is held)."""
        while self._busy < self.slots and self._ring:
            owner = self._ring.popleft()
            line = self._waiting[owner]
            event = line.popleft()
            if line:
                self._ring.append(owner)  # its next caller waits for every other owner's turn first
            else:
                del self._waiting[owner]
            self._busy += 1
            event.set()

    def others_waiting(self, owner: str) -> bool:
        """Whether a caller of another owner waits for a turn (then a long holder should keep its turns short)."""
        with self._lock:
            return any(waiting != owner for waiting in self._ring)

    def waiting(self) -> int:
        """Callers waiting for a turn."""
        with self._lock:
            return sum(map(len, self._waiting.values()))
