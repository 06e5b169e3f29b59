"""Unit tests run alone: no network (Redis included), no child processes. Anything that tries fails loudly."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import pytest

# joblib's loky counts physical cores with a child process (lscpu); tell it the count instead.
os.environ.setdefault("LOKY_MAX_CPU_COUNT", str(os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_connect(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"a unit test tried to connect to {address!r}: it belongs in tests/integration")

    def refuse_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a unit test tried to start {args[0]!r}: it belongs in tests/integration")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_process)
