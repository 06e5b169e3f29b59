"""A README's shell examples: read in order from its ``sh`` blocks, and run one after another like a reader would.

An example is a command (with its continuation lines) and its documented answer: the comment after it and the
comment lines right below it. A session runs each example with bash in one working folder, carrying the
variables earlier examples set (``JOB=$(...)``) to later ones, with ``curl`` failing on an HTTP error and
reporting its status. It checks the documented answer's shape: a leading HTTP status (``# 202 ...``), and the
keys and the string values of JSON quoted in it (``"state": "succeeded"``; numbers and ``"..."`` are only
shapes). A failure names the README line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS_MARK = "readme-http-status:"


@dataclass
class Example:
    line: int  # where the command starts in the README (1-based)
    section: str
    command: str
    answer: str = ""


class ExampleFailed(AssertionError):
    def __init__(self, example: Example, why: str, output: str = "") -> None:
        tail = output[-3000:]
        super().__init__(f"README.md:{example.line} ({example.section}): {why}\n$ {example.command}\n{tail}")
        self.example = example


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's code and its comment: a ``#`` outside quotes at the start or after a blank starts it."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def examples(markdown: str) -> list[Example]:
    """Every command of the ``sh`` blocks, in order, with the section it is in and its documented answer."""
    found: list[Example] = []
    section, in_block, continuing, answering = "", False, False, False
    current: Example | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        if not in_block:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            in_block = line.strip() == "```sh"
            current, continuing, answering = None, False, False
            continue
        if line.strip() == "```":
            in_block = False
            continue
        code, comment = split_comment(line)
        if not code.strip():
            if comment and current is not None and answering:
                current.answer += " " + comment
            else:
                answering = False  # a blank line, or a comment that introduces what follows
            continue
        if continuing and current is not None:
            current.command += "\n" + code
        else:
            current = Example(number, section, code.strip())
            found.append(current)
        answering = True
        if comment:
            current.answer += " " + comment
        continuing = code.endswith("\\")
    return found


def documented_status(answer: str) -> int | None:
    match = re.match(r"\s*([1-5]\d\d)\b", answer)
    return int(match.group(1)) if match else None


def documented_pairs(answer: str) -> list[tuple[str, str | None]]:
    """The JSON keys an answer quotes, each with its string value when it gives a real one."""
    pairs = []
    for match in re.finditer(r'"(\w+)":\s*("((?:[^"\\]|\\.)*)")?', answer):
        value = match.group(3)
        pairs.append((match.group(1), None if value is None or value == "..." else value))
    return pairs


def json_values(document: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in a JSON document."""
    found = []
    if isinstance(document, dict):
        for name, value in document.items():
            if name == key:
                found.append(value)
            found.extend(json_values(value, key))
    elif isinstance(document, list):
        for item in document:
            found.extend(json_values(item, key))
    return found


def body_of(output: str) -> Any:
    """The JSON an example printed (after the headers of ``curl -i``), or None."""
    text = output
    if text.startswith("HTTP/"):
        text = re.split(r"\r?\n\r?\n", text, maxsplit=1)[-1]
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass
class LongRunning:
    """A command that serves until stopped: started, waited for until ``ready`` matches its output (or
    ``check`` passes), then stopped with SIGTERM, unless ``keep`` (it is the stack the rest runs on)."""

    ready: str
    timeout: float = 120
    keep: bool = False
    check: Callable[[], bool] | None = None


@dataclass
class Session:
    """Runs examples one after another in ``cwd`` with ``env``, as one reader at one terminal."""

    cwd: Path
    env: dict[str, str]
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    long_running: dict[str, LongRunning] = field(default_factory=dict)
    timeout: float = 600
    kept: list[tuple[Example, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    ran: list[Example] = field(default_factory=list)

    def __post_init__(self) -> None:
        tools = self.cwd / ".readme-bin"
        tools.mkdir(exist_ok=True)
        curl = shutil.which("curl")
        assert curl, "curl is needed to run the README's examples"
        shim = tools / "curl"  # an HTTP error fails the example; the status goes to stderr for the answer check
        shim.write_text(f"#!/bin/sh\nexec {curl} --fail-with-body --write-out '%{{stderr}}{STATUS_MARK} "
                        "%{http_code}\\n' \"$@\"\n")
        shim.chmod(0o755)
        self.env = {**self.env, "PATH": f"{tools}{os.pathsep}{self.env.get('PATH', '')}"}
        self._state = self.cwd / ".readme-env"

    def command_of(self, example: Example) -> str:
        command = example.command
        for old, new in self.substitutions:
            command = command.replace(old, new)
        return command

    def run(self, example: Example) -> str:
        """Run one example; raise ``ExampleFailed`` when it fails or its answer has another shape."""
        for prefix, how in self.long_running.items():
            if example.command.startswith(prefix):
                self._serve(example, how)
                self.ran.append(example)
                return ""
        script = f"set -a\n{self.command_of(example)}\n__status=$?\nenv -0 > {self._state}\nexit $__status\n"
        try:
            done = subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=self.cwd, env=self.env,
                                  capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise ExampleFailed(example, f"no answer in {self.timeout:.0f} s", str(exc.stdout or "")) from exc
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise ExampleFailed(example, f"exit status {done.returncode}", output)
        self._keep_variables()
        self._check_answer(example, done.stdout, done.stderr)
        self.ran.append(example)
        return done.stdout

    def _keep_variables(self) -> None:
        entries = self._state.read_bytes().split(b"\0")
        env = dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)
        self.env = {k: v for k, v in env.items() if not k.startswith("__") and k not in ("_", "SHLVL", "PWD")}

    def _check_answer(self, example: Example, stdout: str, stderr: str) -> None:
        expected = documented_status(example.answer)
        statuses = re.findall(rf"{STATUS_MARK} (\d+)", stderr)
        if expected is not None:
            if not statuses:
                raise ExampleFailed(example, f"documents HTTP {expected} but made no HTTP request", stdout + stderr)
            if int(statuses[-1]) != expected:
                raise ExampleFailed(example, f"documents HTTP {expected}, got {statuses[-1]}", stdout + stderr)
        pairs = documented_pairs(example.answer)
        if not pairs:
            return
        body = body_of(stdout)
        if body is None:
            raise ExampleFailed(example, "documents a JSON answer but printed no JSON", stdout + stderr)
        for key, value in pairs:
            values = json_values(body, key)
            if not values:
                raise ExampleFailed(example, f"documents the key {key!r}, absent from the answer", stdout)
            if value is not None and value not in [str(v) for v in values]:
                raise ExampleFailed(example, f"documents {key} = {value!r}, got {values}", stdout)

    def _serve(self, example: Example, how: LongRunning) -> None:
        log = self.cwd / f".readme-{example.line}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(["bash", "-c", f"exec {self.command_of(example)}"], cwd=self.cwd,
                                       env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + how.timeout
        while not (re.search(how.ready, log.read_text(errors="replace")) and (how.check is None or how.check())):
            if process.poll() is not None:
                raise ExampleFailed(example, f"exited ({process.returncode}) before it was ready",
                                    log.read_text(errors="replace"))
            if time.monotonic() > deadline:
                self.stop(process)
                raise ExampleFailed(example, f"not ready in {how.timeout:.0f} s (waiting for {how.ready!r})",
                                    log.read_text(errors="replace"))
            time.sleep(0.2)
        if how.keep:
            self.kept.append((example, process, log))
            return
        code = self.stop(process)
        if code not in (0, -signal.SIGTERM):
            raise ExampleFailed(example, f"did not stop cleanly on SIGTERM (exit {code})",
                                log.read_text(errors="replace"))

    @staticmethod
    def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 90) -> int | None:
        """Signal the command's process group and wait until every process of it is gone (``make`` may end
        before the stack it started has stopped); past ``timeout``, kill what is left and return None."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + timeout
        while True:
            process.poll()  # reap it, or its zombie keeps the group alive
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return process.wait()
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
                return None
            time.sleep(0.1)

    def close(self) -> None:
        """Stop what was kept running (Ctrl-C, as its reader would), newest first."""
        for _, process, _ in reversed(self.kept):
            self.stop(process, signal.SIGINT)
