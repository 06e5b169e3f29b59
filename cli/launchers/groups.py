"""Process groups a launcher started (each in a session of its own): stopped warm, then cold past a grace."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable


def stop_groups(processes: Iterable[subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    """SIGTERM every process's group that still runs, then wait for each; a group still there after ``grace``
    seconds gets SIGKILL."""
    started = list(processes)
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
