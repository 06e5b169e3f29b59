"""The gateway's WSGI server worker: gunicorn's gevent worker, answering its own protocol errors as problem+json."""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.gthread import ThreadWorker

from batcomputer.errors import BatcomputerError

# Errors gunicorn answers before the request reaches Flask, by status: the stable problem code clients see.
SERVER_PROBLEM_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
                        431: "headers_too_large", 500: "internal", 501: "not_implemented"}


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying an RFC 9457 problem, closing the connection."""
    code = SERVER_PROBLEM_CODES.get(status, f"http_{status}")
    problem = BatcomputerError(detail or reason)
    body = json.dumps({**problem.to_problem(), "type": f"https://batcomputer.dev/problems/{code}", "title": reason,
                       "status": status, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, problem_bytes(status_int, reason, mesg))


class ProblemWorker(GeventWorker):
    """gunicorn's gevent worker: a greenlet per connection, so thousands of clients waiting on ``?wait`` or
    sending their body slowly cost memory, not threads, and never hold up others. Its own error answers
    (request line too long, headers too large, a malformed request) are problem+json like every other
    error of the gateway."""

    def init_process(self) -> Any:
        util.write_error = write_problem  # the one function gunicorn writes its error pages with
        return super().init_process()


class ThreadedProblemWorker(ThreadWorker):
    """gunicorn's threaded worker with the same problem+json errors, for a registry that fsspec reads over the
    network (Azure): fsspec runs its coroutines on an asyncio loop in a thread of its own, which gevent's
    patched threads cannot host (it refuses to run, a loop being already running in the requests' thread).
    Here every waiting or slow client holds one of ``threads`` per process."""

    def init_process(self) -> Any:
        util.write_error = write_problem
        return super().init_process()
