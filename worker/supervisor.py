"""Keeps one worker process running: restarts it when it dies, passes SIGTERM/SIGINT on for a warm stop."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

log = logging.getLogger("batcomputer.supervisor")


def supervise(command: list[str], max_backoff: float = 30.0) -> int:
    """Run ``command`` until we are told to stop (SIGTERM/SIGINT); restart it whenever it exits otherwise."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    told: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        # A second signal may interrupt this handler inside Event.set, which holds the event's lock: only the
        # first one sets it (the append is one bytecode); every one is passed on to the child.
        if not told:
            told.append(signum)
            stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    backoff = 0.5
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        code = child.wait()
        if stopping.is_set():
            return code
        # Anything else is a death, whatever the exit code: Celery can exit with 0 after an unrecoverable
        # broker error (kombu's restore_unacked during a Redis outage), and must come back.
        if time.monotonic() - started > 60:
            backoff = 0.5
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        print(f"batcomputer worker: the worker process died ({how}); restarting in {backoff:.1f} s",
              file=sys.stderr, flush=True)
        if stopping.wait(backoff):
            return code
        backoff = min(max_backoff, backoff * 2)
