"""Job routes: submit records to a model, poll a job, list recent jobs, cancel a queued job; dead jobs and
their replay (admin)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from api import auth
from api.context import gateway, read_body
from api.gateway import check_key
from batcomputer.errors import BadRequest, Conflict
from batcomputer.jobqueue.keyspace import KIND_BATCH, KIND_CHUNK, STATES
from batcomputer.jobqueue.records import RawJSON

jobs = Blueprint("jobs", __name__, url_prefix="/api")


def job_response(job: dict[str, Any], status: int) -> Response:
    """The job as JSON; its results, kept as stored, are spliced in rather than parsed and written again
    (for a 1,000-record job that is most of the gateway's work)."""
    results = job.get("results")
    if isinstance(results, RawJSON):
        head = json.dumps({k: v for k, v in job.items() if k != "results"})
        response = current_app.response_class(f'{head[:-1]}, "results": {results}}}\n', status=status,
                                              mimetype="application/json")
    else:
        response = jsonify(job)
        response.status_code = status
    response.headers["Location"] = url_for("jobs.show_job", job_id=job["id"])
    return response


@jobs.post("/models/<model>/jobs")
def submit_job(model: str) -> Response:
    gw = gateway()
    wait = gw.parse_wait(request.args.get("wait"))
    record_key = request.args.get("key")
    pinned = gw.route(model, request.args.get("version"), request.args.get("alias"), record_key)
    raw = read_body()
    key = request.headers.get("Idempotency-Key")
    caller = auth.caller()
    timeout = gw.parse_timeout(request.args.get("timeout"), gw.settings.timeout_records_seconds)
    explain = gw.parse_explain(request.args.get("explain"), pinned)
    submitted = gw.submit_body(pinned, raw, (key, raw) if key else None, wait, owner=caller, timeout=timeout,
                               explain=explain, key=check_key(record_key, "key") if record_key is not None else None)
    return job_response(submitted.job, 200 if submitted.final else 202)


@jobs.get("/jobs/<job_id>")
def show_job(job_id: str) -> Response:
    gw = gateway()
    wait = gw.parse_wait(request.args.get("wait"))
    if auth.caller() is not None:
        auth.check_owner(gw.jobs.get(job_id))  # before waiting: another key's job is not there
    return job_response(gw.wait_for(job_id, wait), 200)


@jobs.delete("/jobs/<job_id>")
def cancel_job(job_id: str) -> Response:
    gw = gateway()
    job = auth.check_owner(gw.jobs.get(job_id))
    if job.get("kind") == KIND_CHUNK:
        raise Conflict(f"job {job_id} is a chunk of batch {job.get('parent')}: cancel the batch",
                       job=job_id, batch=job.get("parent"))
    if job.get("kind") == KIND_BATCH:
        cancelled = gw.batches.cancel(job_id)
        if cancelled.get("callback_url"):
            gw.batches.schedule_webhook(job_id)
        return job_response(cancelled, 200)
    return job_response(gw.jobs.cancel(job_id), 200)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(raw)


@jobs.get("/jobs")
def list_jobs() -> dict[str, Any]:
    state, model = request.args.get("state") or None, request.args.get("model") or None
    if state is not None and state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", field="state")
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    caller = auth.caller()
    found, next_offset = gateway().jobs.recent(state, model, offset, limit, caller.id if caller else None)
    following = None
    if next_offset is not None and len(found) == limit:
        following = url_for("jobs.list_jobs", state=state, model=model, limit=limit, offset=next_offset)
    return {"jobs": found, "next": following}


@jobs.get("/dead")
def list_dead() -> dict[str, Any]:
    """Dead jobs (every key's: an operator's view), most recent first."""
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    found, next_offset = gateway().jobs.dead.page(offset, limit)
    following = url_for("jobs.list_dead", limit=limit, offset=next_offset) if next_offset is not None else None
    return {"jobs": found, "next": following}


@jobs.post("/jobs/<job_id>/replay")
def replay_job(job_id: str) -> Response:
    if request.content_length:
        read_body()  # a body, if any, must be JSON (no form posts from other sites); it is not used
    return job_response(gateway().jobs.dead.replay(job_id), 202)
