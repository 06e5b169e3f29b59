"""Starting a retrain over HTTP survives a Prefect server that is busy for a moment, and says so when it stays
busy. The Prefect server here is a stand-in answering its REST API's two calls (the real one is in
tests/integration/orchestration/test_flows_server.py, where a busy SQLite database answered 503 once in CI)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from batcomputer.settings import Settings
from tests.conftest import private_settings, remove_keys


class BusyPrefect(ThreadingHTTPServer):
    """Answers ``busy`` 503s to creating a flow run before it creates one (no Retry-After: the gateway's own
    delays apply)."""

    def __init__(self, busy: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.busy = busy
        self.calls: list[str] = []


class Handler(BaseHTTPRequestHandler):
    server: BusyPrefect

    def answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # the deployment, by name
        self.server.calls.append(f"GET {self.path}")
        self.answer(200, {"id": "deployment-1"})

    def do_POST(self) -> None:  # create a flow run
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.calls.append(f"POST {self.path}")
        if self.server.busy > 0:
            self.server.busy -= 1
            self.answer(503, {"exception_message": "Service Unavailable"})
        else:
            self.answer(201, {"id": "3f1c6f0e-0d5c-4a1e-9b51-2b4d1e0c9a11", "name": "calm-run"})

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def prefect(request: pytest.FixtureRequest) -> Iterator[BusyPrefect]:
    server = BusyPrefect(request.param)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def gateway_settings(trained_registry: Settings, redis_base_url: str, prefect: BusyPrefect) -> Iterator[Settings]:
    host, port = prefect.server_address[:2]
    own = private_settings(trained_registry, redis_base_url, prefect_api_url=f"http://{host}:{port}/api")
    yield own
    remove_keys(redis_base_url, own.key_prefix)


@pytest.mark.parametrize("prefect", [2], indirect=True)
def test_a_retrain_is_started_when_prefect_is_busy_for_a_moment(prefect: BusyPrefect,
                                                                gateway_settings: Settings) -> None:
    from api.app import create_app

    response = create_app(gateway_settings).test_client().post("/api/models/titanic/retrain", json={})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["flow_run_id"] == "3f1c6f0e-0d5c-4a1e-9b51-2b4d1e0c9a11"
    assert prefect.calls.count("POST /api/deployments/deployment-1/create_flow_run") == 3


@pytest.mark.parametrize("prefect", [100], indirect=True)
def test_a_prefect_that_stays_busy_is_a_503_naming_its_answer(prefect: BusyPrefect,
                                                              gateway_settings: Settings) -> None:
    from api.app import create_app

    started = time.monotonic()
    response = create_app(gateway_settings).test_client().post("/api/models/titanic/retrain", json={})
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert response.get_json()["detail"] == "the Prefect server answered 503"
    assert prefect.calls.count("POST /api/deployments/deployment-1/create_flow_run") == 4  # 1 + 3 retries
    assert time.monotonic() - started < 10  # the client hears back soon, and retries later
