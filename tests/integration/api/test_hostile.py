"""Hostile input against the live gateway (gunicorn): every case is a 4xx problem with a stable code, never a 500."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]
TITANIC = {"pclass": 3, "sex": "male", "age": 22.0, "sibsp": 1, "parch": 0}
JOBS = "/api/models/titanic/jobs"


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def with_age(raw_number: str) -> bytes:
    return json.dumps({**TITANIC, "age": 0}).replace('"age": 0', f'"age": {raw_number}').encode()


# (name, method, path, body, headers, status, problem code, field)
CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int, str, str | None]] = [
    ("JSON nested 10,000 deep", "POST", JOBS, deep(10_000), {}, 400, "bad_request", "body"),
    ("record nested 10,000 deep", "POST", JOBS, b'{"records": ' + deep(10_000) + b"}", {}, 400, "bad_request",
     "body"),
    ("a 400-digit integer", "POST", JOBS, with_age("9" * 400), {}, 422, "validation", "age"),
    ("a 5,000-digit integer", "POST", JOBS, with_age("9" * 5_000), {}, 422, "validation", "age"),
    ("a negative 5,000-digit integer", "POST", JOBS, with_age("-" + "9" * 5_000), {}, 422, "validation", "age"),
    ("1e400", "POST", JOBS, with_age("1e400"), {}, 422, "validation", "age"),
    ("version=²", "POST", f"{JOBS}?version=\u00b2", json.dumps(TITANIC).encode(), {}, 400, "bad_request",
     "version"),
    ("version of Arabic-Indic digits", "POST", f"{JOBS}?version=\u0661", json.dumps(TITANIC).encode(), {}, 400,
     "bad_request", "version"),
    ("version of 4,000 digits", "POST", f"{JOBS}?version={'9' * 4_000}", json.dumps(TITANIC).encode(), {}, 400,
     "bad_request", "version"),
    ("limit=²", "GET", "/api/jobs?limit=\u00b2", None, {}, 400, "bad_request", "limit"),
    ("offset of 40 digits", "GET", f"/api/jobs?offset={'9' * 40}", None, {}, 400, "bad_request", "offset"),
    ("alias PUT with a 4,000-digit version", "PUT", "/api/models/titanic/aliases/canary",
     b'{"version": ' + b"9" * 4_000 + b"}", {}, 400, "bad_request", "version"),
    ("alias PUT with a version past the limit", "PUT", "/api/models/titanic/aliases/canary",
     b'{"version": 99999999999}', {}, 400, "bad_request", "version"),
    ("alias PUT with a 2,000-character reason", "PUT", "/api/models/titanic/aliases/canary",
     json.dumps({"version": 1, "reason": "x" * 2_000}).encode(), {}, 400, "bad_request", "reason"),
    ("alias PUT with a 1,000-character by", "PUT", "/api/models/titanic/aliases/canary",
     json.dumps({"version": 1, "by": "x" * 1_000}).encode(), {}, 400, "bad_request", "by"),
    ("alias PUT with a non-string reason", "PUT", "/api/models/titanic/aliases/canary",
     json.dumps({"version": 1, "reason": {"a": 1}}).encode(), {}, 400, "bad_request", "reason"),
    ("a job id of 200 characters", "GET", f"/api/jobs/{'a' * 200}", None, {}, 404, "not_found", None),
    ("invalid UTF-8", "POST", JOBS, b'{"sex": "\xff"}', {}, 400, "bad_request", "body"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "headers", "status", "code", "field"), CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_input_is_a_4xx_problem(stack: Stack, name: str, method: str, path: str, body: bytes | None,
                                        headers: dict[str, str], status: int, code: str, field: str | None) -> None:
    base, _, _ = stack
    response = requests.request(method, f"{base}{path}", data=body,
                                headers={"Content-Type": "application/json", **headers}, timeout=30)
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code and problem["status"] == status
    if code == "validation":
        assert [p["field"] for p in problem["problems"]] == [field]
        assert problem["problems"][0]["code"] in ("range", "not_finite")
    elif field is not None:
        assert problem["field"] == field
    assert len(response.content) < 10_000  # never an echo of the hostile input


def raw_exchange(base: str, data: bytes, chunks: Iterator[bytes] | None = None) -> tuple[int, dict[str, str],
                                                                                         bytes]:
    """Send raw bytes to the gateway; return the status, headers and body of its answer."""
    where = urlsplit(base)
    with socket.create_connection((where.hostname or "127.0.0.1", where.port or 80), timeout=30) as sock:
        sock.sendall(data)
        try:
            for chunk in chunks or iter(()):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        received = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            received += part
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = unchunk(body)
    return int(lines[0].split()[1]), headers, body


def unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def test_a_chunked_body_over_the_limit_is_413_not_cut_short(stack: Stack) -> None:
    base, settings, _ = stack
    piece = b"x" * 65_536
    count = settings.max_body_bytes // len(piece) + 2

    def chunks() -> Iterator[bytes]:
        for _ in range(count):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    request = (f"POST {JOBS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    status, headers, body = raw_exchange(base, request, chunks())
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "body_too_large"


def test_a_chunked_body_within_the_limit_is_accepted(stack: Stack) -> None:
    base, _, _ = stack
    payload = json.dumps(TITANIC).encode()
    request = (f"POST {JOBS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    halves = [payload[:10], payload[10:]]
    status, _, body = raw_exchange(base, request, iter([f"{len(h):x}\r\n".encode() + h + b"\r\n" for h in halves]
                                                       + [b"0\r\n\r\n"]))
    assert status == 202, body
    assert json.loads(body)["state"] == "queued"


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (f"GET /api/jobs?x={'a' * 9_000} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 414, "uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"".join(f"X-H{i}: v\r\n".encode() for i in range(200)) + b"\r\n",
     431, "headers_too_large"),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 9_000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"NOT A REQUEST\r\n\r\n", 400, "bad_request"),
    (b"GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n", 400, "bad_request"),
], ids=["request line too long", "too many headers", "a header too large", "malformed request line",
        "unknown HTTP version"])
def test_errors_of_the_http_server_itself_are_problems(stack: Stack, request_bytes: bytes, status: int,
                                                       code: str) -> None:
    base, _, _ = stack
    got, headers, body = raw_exchange(base, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code) and problem["detail"]
