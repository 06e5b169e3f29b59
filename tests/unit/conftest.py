"""Unit tests run alone: no network (Redis included), no child processes. Anything that tries fails loudly."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="session")
def cores_counted() -> None:
    """joblib's loky counts physical cores once with a child process (lscpu), which unit tests refuse: count
    them before any test runs (scikit-learn asks when it fits a gradient boosting model)."""
    from joblib.externals.loky.backend.context import _count_physical_cores

    _count_physical_cores()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_connect(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"a unit test tried to connect to {address!r}: it belongs in tests/integration")

    def refuse_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a unit test tried to start {args[0]!r}: it belongs in tests/integration")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_process)
