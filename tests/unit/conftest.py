"""Unit tests run alone: no network (Redis included), no child processes. Anything that tries fails loudly."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_connect(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"a unit test tried to connect to {address!r}: it belongs in tests/integration")

    def refuse_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a unit test tried to start {args[0]!r}: it belongs in tests/integration")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_process)
