"""The explainer: a child process, at a lower CPU priority, that computes explanations for one scoring process.

An explanation scores every coalition of a record's fields against the bundle's background rows: thousands of
rows per record, a hundred to a few thousand times the cost of scoring it. Computed in the scoring process it
would hold the interpreter (the GIL) and the process's share of the CPU while unexplained records wait. So each
process that scores (a record worker, a bulk pool process, a stream consumer) hands explanations to its own
child, started on first use with ``BATCOMPUTER_EXPLAIN_NICENESS`` added to its niceness: the kernel runs it when
the cores are not needed by scoring, and the scoring process only waits, without the GIL, for the answer. Where
the kernel groups processes by session (autogroup, on most desktops and plain Linux hosts; not inside container
cgroups), niceness only orders a session's own processes and every session gets an equal share: the child
starts its own session and lowers that session's weight too, or it would take from the gateway's share.

The child loads bundles from the registry itself (verified like every load) and keeps a few loaded. Requests go
one at a time over a pipe: ``(model, version, records)`` in, ``("ok", explanations)`` or ``("error",
exception)`` out. A caller stopped while it waits (a time limit, a shutdown) kills the child, which is started
again for the next request; a child whose parent dies reads the end of its pipe and exits.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from batcomputer.errors import ModelError
from batcomputer.models.bundle import Bundle
from batcomputer.settings import Settings

POLL_SECONDS = 0.1  # how often a waiting caller looks up (time limits and a dead child are noticed between)


class Explainer:
    """Explanations computed in a child process at ``settings.explain_niceness`` (one request at a time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe: tuple[Connection, Connection] | None = None  # (to the child, from the child)

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def explain(self, bundle: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each record's explanation (as ``batcomputer.models.explain.explain`` computes it), in order."""
        if not records:
            return []
        while not self._lock.acquire(timeout=POLL_SECONDS):  # a waiting caller stays stoppable
            pass
        try:
            status, value = self._ask((bundle.model, bundle.version, records))
        finally:
            self._lock.release()
        if status == "error":
            raise value
        return value

    def _ask(self, request: tuple[str, int, list[dict[str, Any]]]) -> tuple[str, Any]:
        """Send one request and wait for its answer (the lock is held). Any way out but the answer kills the
        child: its answer would otherwise be read as the next request's."""
        child, (out, back) = self._ensure()
        try:
            out.send(request)
            while not back.poll(POLL_SECONDS):
                if child.poll() is not None:
                    raise ModelError(f"the explainer process ended (exit code {child.returncode}) while "
                                     f"explaining {len(request[2]):,} record(s) of {request[0]} version {request[1]}")
            return back.recv()
        except BaseException:
            self._stop()
            raise

    def _ensure(self) -> tuple[subprocess.Popen[bytes], tuple[Connection, Connection]]:
        if self._child is not None and self._child.poll() is None and self._pipe is not None:
            return self._child, self._pipe
        self._stop()
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        child = subprocess.Popen([sys.executable, "-c", "from worker.explainer import serve; serve()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
                                 start_new_session=True)
        assert child.stdin is not None and child.stdout is not None
        pipe = (Connection(os.dup(child.stdin.fileno()), readable=False),
                Connection(os.dup(child.stdout.fileno()), writable=False))
        child.stdin.close()
        child.stdout.close()
        pipe[0].send(self.settings)
        self._child, self._pipe = child, pipe
        return child, pipe

    def _stop(self) -> None:
        """Kill the child, if any (its work is abandoned)."""
        child, pipe = self._child, self._pipe
        self._child = self._pipe = None
        if pipe is not None:
            for end in pipe:
                end.close()
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()


def serve() -> None:
    """The child's loop: answer requests until the pipe ends, at a lower priority once it has started."""
    from batcomputer.models.explain import explain
    from batcomputer.models.registry import Registry
    from worker.bundle_cache import BundleCache

    requests, answers = Connection(0, writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # nothing but answers may go down the pipe: whatever prints goes to the worker's log
    settings: Settings = requests.recv()
    bundles = BundleCache(Registry.from_settings(settings), size=4)
    lowered = False
    while True:
        try:
            model, version, records = requests.recv()
        except EOFError:  # the scoring process ended or gave up on this child
            return
        try:
            bundle = bundles.get(model, version)
            if not lowered:  # after the first bundle's load (scikit-learn's imports): a busy machine must not
                lower_priority(settings.explain_niceness)  # starve the start of the first explained request
                lowered = True
            answer: tuple[str, Any] = ("ok", explain(bundle, records))
        except Exception as exc:
            answer = ("error", exc if picklable(exc) else ModelError(f"{type(exc).__name__}: {exc}"))
        answers.send(answer)


def lower_priority(niceness: int) -> None:
    """Add ``niceness`` to this process's, and to its session's autogroup where the kernel has them."""
    os.nice(niceness)
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(niceness))
    except OSError:  # no autogroups (a container's cgroup, another kernel): niceness alone does it
        pass


def picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True
