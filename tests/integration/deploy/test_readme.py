"""The README runs itself: its shell examples, in order, on a fresh checkout's defaults, against its own `make up`.

The examples run in a new folder that holds only what a clone holds after `make install` (the Makefile, the
venv, the npm packages), so the registry, Redis, state and data folders are the defaults, empty at first:
`make up` fetches the data, trains, finds no Redis it was given and starts its own. Three things differ from
a reader's terminal: ports are free ones rather than 8000, 5555 and 4200 (another stack may be running here),
`.venv/bin` is on PATH, and curl fails on an HTTP error (so a 4xx is a failed example, not a printed page).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, TITANIC_CSV, free_port
from tests.readme import Example, ExampleFailed, LongRunning, Session, examples

README = ROOT / "README.md"

# What a clone holds after `make install` (and `make test-tools`, for the font) is linked into the reader's
# folder: the tracked files, the venv and the npm packages; not data/ (its fetched files go to data/raw).
INSTALLED = (".venv", "node_modules")

# Sections and commands that do not run here, and why; each must still be in the README (no stale entries).
NOT_HERE_SECTIONS = {"With Docker": "needs a Docker engine, which this machine has not "
                                    "(tests/integration/deploy/test_compose.py validates the compose file and runs "
                                    "the image's install script)"}
NOT_HERE_COMMANDS = {"make test": "this test runs inside it"}
NEEDS_KAGGLE = "batcomputer train titanic-kaggle --source train.csv"
DEAD_SECTION = "Admission control and dead jobs"


@dataclass
class Reader:
    """A reader's folder and terminal, with the stack its `make up` started."""

    session: Session
    port: int
    flower: int
    not_run: dict[int, str]


def reader_session(folder: Path) -> tuple[Session, int, int]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in sorted({path.split("/")[0] for path in tracked.splitlines()} - {"data"}) + list(INSTALLED):
        (folder / name).symlink_to(ROOT / name)
    port, flower, prefect = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCOMPUTER_", "PREFECT_"))}
    env.update(PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               BATCOMPUTER_API_PORT=str(port), BATCOMPUTER_API_URL=f"http://127.0.0.1:{port}",
               BATCOMPUTER_PREFECT_API_URL=f"http://127.0.0.1:{prefect}/api")

    def flower_answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{flower}/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    session = Session(folder, env, substitutions=[("127.0.0.1:8000", f"127.0.0.1:{port}"),
                                                  ("--port=5555", f"--port={flower}")],
                      long_running={"make up": LongRunning(r"Ctrl-C stops everything", timeout=900, keep=True),
                                    "batcomputer stream crime": LongRunning(r"consumer \S+ reading"),
                                    "batcomputer flows serve": LongRunning(r"deployments are being served"),
                                    "celery -A worker.celery_app events": LongRunning(r"heartbeat:"),
                                    "celery -A worker.celery_app flower": LongRunning(r"Visit me at",
                                                                                      check=flower_answers)})
    return session, port, flower


def make_dead_job(folder: Path) -> str:
    """The fault the dead-jobs section is about: a job whose worker was lost on every delivery."""
    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.jobqueue.jobs import JobStore
    from batcomputer.jobqueue.keyspace import DEAD, QUEUE_RECORDS
    from batcomputer.jobqueue.records import new_job_id
    from batcomputer.models.registry import Registry
    from batcomputer.settings import Settings

    settings = Settings(registry=str(folder / "var" / "registry"), state_dir=str(folder / "var"))
    store = JobStore.from_settings(redis_client(settings), settings)
    bundle = Registry.from_settings(settings).bundle("crime", "production")
    job_id = new_job_id()
    store.create(job_id, "crime", bundle.version, bundle.sha256,
                 [{"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}], QUEUE_RECORDS)
    for _ in range(settings.max_attempts + 1):
        store.start([job_id], "readme-lost-worker", settings.max_attempts)
    assert store.get(job_id)["state"] == DEAD
    return job_id


def run_examples(reader: Reader, found: list[Example]) -> None:
    dead_made = False
    for example in found:
        if example.section in NOT_HERE_SECTIONS:
            reader.not_run[example.line] = NOT_HERE_SECTIONS[example.section]
            continue
        if example.command in NOT_HERE_COMMANDS:
            reader.not_run[example.line] = NOT_HERE_COMMANDS[example.command]
            continue
        if example.command.startswith(NEEDS_KAGGLE):
            if not TITANIC_CSV.exists():
                reader.not_run[example.line] = f"Kaggle's train.csv is not here ({TITANIC_CSV} missing)"
                continue
            shutil.copyfile(TITANIC_CSV, reader.session.cwd / "train.csv")  # where the reader saved it
        if example.section == DEAD_SECTION and not dead_made:
            make_dead_job(reader.session.cwd)
            dead_made = True
        reader.session.run(example)


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    folder = tmp_path_factory.mktemp("reader")
    session, port, flower = reader_session(folder)
    found = Reader(session, port, flower, {})
    try:
        yield found
    finally:
        session.close()


# The walk is the whole document, 60-odd examples with training, retraining and a stack started and stopped in
# it: a suite's 300 s per test was exceeded once in CI (no example hung; the next had run for 7 s). Each
# example keeps its own limit (Session.timeout, LongRunning.timeout); this one bounds the walk.
@pytest.mark.timeout(1200)
def test_every_example_of_the_readme_runs_in_order_on_a_fresh_checkout(reader: Reader) -> None:
    found = examples(README.read_text())
    assert len(found) > 60 and found[0].command == "make up"
    for key in [*NOT_HERE_SECTIONS]:
        assert any(e.section == key for e in found), f"stale entry: no section {key!r} has examples"
    for key in [*NOT_HERE_COMMANDS, NEEDS_KAGGLE, *reader.session.long_running]:
        assert any(e.command.startswith(key) for e in found), f"stale entry: no example {key!r}"

    run_examples(reader, found)

    assert len(reader.session.ran) + len(reader.not_run) == len(found)
    for line, why in sorted(reader.not_run.items()):
        print(f"README.md:{line} not run here: {why}")
    # What the examples did, seen from outside: the stack `make up` started still serves, on a registry the
    # examples filled, and the files they wrote are whole.
    base = f"http://127.0.0.1:{reader.port}"
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    models = {m["name"] for m in requests.get(f"{base}/api/models", timeout=10).json()["models"]}
    assert {"crime", "titanic"} <= models
    import pyarrow.parquet as pq

    folder = reader.session.cwd
    assert pq.read_metadata(folder / "scored.parquet").num_rows == 100_000
    assert pq.read_metadata(folder / "var" / "batches" / "out" / "scored.parquet").num_rows == 100_000
    assert (folder / "var" / "redis" / "url").exists()  # how the commands beside `make up` found its Redis
    assert not (folder / ".env").exists()  # the Docker section did not run


def test_a_broken_example_fails_naming_its_line_and_why(reader: Reader) -> None:
    """The README test is not a rubber stamp: a README whose example is wrong fails at that example."""
    text = README.read_text()
    submit = """"month": 10}'\n# 202 Accepted"""
    assert text.count(submit) == 1
    broken = text.replace(submit, submit.replace("10", "13"))
    found = [e for e in examples(broken) if e.section == "Using the service"]
    if not reader.session.kept:  # run alone: the stack comes from the README's own first example
        reader.session.run(examples(text)[0])
    with pytest.raises(ExampleFailed) as failure:
        for example in found:
            reader.session.run(example)
    message = str(failure.value)
    assert message.startswith(f"README.md:{found[0].line} (Using the service): exit status 22"), message
    assert "422" in message and "month" in message and "13" in message, message


def test_documented_answers_are_checked_for_shape(reader: Reader) -> None:
    """A documented status or JSON key the service does not give fails the example."""
    base = f"http://127.0.0.1:{reader.port}"
    if not reader.session.kept:
        reader.session.run(examples(README.read_text())[0])
    wrong_status = Example(1, "test", f"curl -s {base}/healthz", " 202 Accepted")
    with pytest.raises(ExampleFailed, match="documents HTTP 202, got 200"):
        reader.session.run(wrong_status)
    wrong_key = Example(2, "test", f"curl -s {base}/api/models/crime", ' {"nonsense": ...}')
    with pytest.raises(ExampleFailed, match="documents the key 'nonsense'"):
        reader.session.run(wrong_key)
    wrong_value = Example(3, "test", f"curl -s {base}/api/models/crime", ' {"name": "titanic"}')
    with pytest.raises(ExampleFailed, match="documents name = 'titanic'"):
        reader.session.run(wrong_value)


def test_the_webhook_check_of_the_readme_accepts_a_real_signature_and_refuses_others() -> None:
    from batcomputer.jobqueue.webhooks import sign

    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "def verify" in b]
    assert blocks, "the README's webhook check is gone"
    names: dict[str, Any] = {}
    exec(blocks[0], names)  # the README's own code, as a reader would paste it
    import time

    body, now = b'{"id": "abc", "state": "succeeded"}', int(time.time())
    header = sign("s3cret", now, body)
    assert names["verify"]("s3cret", header, body)
    assert not names["verify"]("other", header, body)
    assert not names["verify"]("s3cret", header, body + b" ")
    assert not names["verify"]("s3cret", sign("s3cret", now - 3600, body), body)  # a replay of an old delivery
