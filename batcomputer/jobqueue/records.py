"""Job records as clients and workers see them: ids, digests, times, the shapes ``start`` and ``create`` return,
and decoding of stored fields (numbers as numbers, internal fields dropped, results kept as raw JSON)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from batcomputer.jobqueue.keyspace import KIND_BATCH, QUEUED, RUNNING, SUCCEEDED

MAX_JOB_ID = 64
SUMMARY_FIELDS = ("id", "state", "model", "version", "bundle_sha256", "alias", "count", "queue", "created",
                  "started", "finished", "attempts", "error", "kind", "owner")
BATCH_COUNTS = ("rows_total", "rows_done", "rows_failed", "chunks_total", "chunks_done")
BATCH_INTERNAL = ("owned", "parts", "upload", "failed_chunk")
UPLOADED = "upload"  # a batch's ``input`` when its file was sent in the request


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def new_job_id() -> str:
    return uuid.uuid4().hex


def body_digest(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Start:
    """What a worker learns when it starts a delivery of a job."""

    state: str | None  # None: the job record is gone (expired); BUSY: another live worker holds it
    attempts: int
    model: str = ""
    version: int = 0
    records: Any = None  # the clean records; for a batch or a chunk, what to read and where to write
    phase: str | None = None  # a batch's: plan (no phase yet) or merge
    created: float | None = None  # when the job was accepted (seconds)
    queue: str = ""
    owner: str = ""  # the key whose job it is ('' without keys)
    source: str = "job"  # how it came: a job, or /api/predict ("predict")
    timeout: float | None = None  # the time limit its request asked for, in seconds (None: the model's or default)
    explain: bool = False  # its request asked for each field's contribution to each output
    keys: list[str | None] | None = None  # the client's key of each record, where it sent them (for outcomes)


@dataclass(frozen=True)
class Payload:
    """A job's clean records, already as JSON (the gateway's one-pass decoder writes them so)."""

    json: bytes
    count: int


@dataclass(frozen=True)
class Created:
    """The outcome of ``create``: a new job, or the job an earlier request with the same key created."""

    job_id: str
    new: bool
    job: dict[str, Any] | None = None


class RawJSON(str):
    """JSON text kept as it was stored (a job's results): answers embed it without parsing it again."""

    def parse(self) -> Any:
        return json.loads(self)


def decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return decode_text({k.decode(): v.decode() for k, v in raw.items()})


def decode_final(entry: str) -> dict[str, Any]:
    """A final job as the finish script hands it to an inbox: ``<id> <JSON of its fields>\n<results>``."""
    fields, _, results = entry.split(" ", 1)[1].partition("\n")
    return decode_text({**orjson.loads(fields), **({"results": results} if results else {})})


def progress(started: str | None, finished: str | None, job: dict[str, Any],
             now: float | None = None) -> dict[str, Any]:
    """A batch's rows per second since its scoring began and the seconds left at that rate (None until
    there is a rate to go by)."""
    done, total = job.get("rows_done", 0), job.get("rows_total", 0)
    end = float(finished) if finished else (time.time() if now is None else now)
    elapsed = end - float(started) if started else 0.0
    rate = done / elapsed if done and elapsed > 0 else None
    if job.get("state") == SUCCEEDED:
        eta: float | None = 0.0
    elif job.get("state") in (QUEUED, RUNNING) and rate:
        eta = (total - done) / rate
    else:
        eta = None
    return {"rows_per_second": round(rate, 1) if rate else None,
            "eta_seconds": round(eta, 1) if eta is not None else None}


def decode_text(fields: dict[str, str]) -> dict[str, Any]:
    """A job for clients from its stored fields: numbers as numbers, internal fields dropped, a batch's own
    files named by what they are (``upload``, its output's route) rather than where they lie, its results as
    ``RawJSON``."""
    job: dict[str, Any] = dict(fields)
    if job.get("upload") == "1":  # files Batcomputer named are shown by what they are, never by a server path
        job["input"] = UPLOADED
    if job.get("owned") == "1":
        job["output"] = f"/api/jobs/{job.get('id', '')}/output"
    for key in ("version", "count", "attempts", "replays", *BATCH_COUNTS):
        if key in job:
            job[key] = int(job[key])
    if "timeout" in job:
        job["timeout"] = float(job["timeout"])
    if "explain" in job:
        job["explain"] = job["explain"] == "1"
    if job.pop("replayable", None) == "1":
        job["replayable"] = True  # stopped by its time limit: listed with the dead jobs, and replayable
    for internal in ("payload", "holder", "inbox", "sent", "sent_at", "lane", *BATCH_INTERNAL):
        job.pop(internal, None)
    if "webhook" in job:
        job["webhook"] = json.loads(job["webhook"])
    if "keys" in job:
        job["keys"] = json.loads(job["keys"])  # the client's key of each record, as it sent them
    if job.get("kind") == KIND_BATCH:
        job.update(progress(job.pop("scoring_started", None), job.pop("scoring_finished", None), job))
        for name in BATCH_COUNTS:  # one shape from submission on: totals are null until the file is planned
            job.setdefault(name, None if name in ("rows_total", "chunks_total") else 0)
    if not job.get("alias"):
        job.pop("alias", None)
    results = job.pop("results", None)
    if results is not None:
        job["results"] = RawJSON(results)
    if "error" in job:
        job["error"] = json.loads(job["error"])
    return job
