"""Batch routes: submit a Parquet file (its bytes, a multipart upload, or URIs in the storage roots), download
the output of a finished batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Blueprint, Response, request, send_file

from api import auth
from api.context import JSON, gateway, read_body, require_media
from api.gateway import Gateway, Pinned, parse_json
from api.routes.jobs import job_response
from batcomputer.errors import BadRequest, Conflict, NotFound, TooManyRequests
from batcomputer.files.storage import Location, StorageRefused, remove, write_stream
from batcomputer.jobqueue.keyspace import KIND_BATCH, QUEUE_BULK, SUCCEEDED, lane_for
from batcomputer.jobqueue.records import Payload, new_job_id
from batcomputer.jobqueue.webhooks import check_callback

log = logging.getLogger("batcomputer.api")
batches = Blueprint("batches", __name__, url_prefix="/api")
PARQUET = "application/vnd.apache.parquet"
FILE_TYPES = (PARQUET, "application/octet-stream")
MULTIPART = "multipart/form-data"
ACCEPTED = (*JSON, *FILE_TYPES, MULTIPART)
OPTIONS = ("output_uri", "callback_url", "columns", "overwrite", "timeout", "explain", "key_column")


def _columns(raw: Any) -> list[str] | None:
    if raw is None or raw == "":
        return None
    names = [name.strip() for name in raw.split(",")] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise BadRequest("columns must name input columns: a comma-separated list, or a JSON array of names",
                         field="columns")
    return names


def _submit(gw: Gateway, pinned: Pinned, job_id: str, input_url: str, uploaded: bool,
            options: dict[str, Any]) -> Response:
    """Create the batch job (the plan happens on a bulk worker) and send it. In the production profile a
    ``score`` key's files stay in its own folder and the prefixes an admin granted it, and a named output that
    exists is replaced only when the key asks (``overwrite``), never when another key's batch wrote it."""
    storage = gw.storage
    caller = auth.caller()
    owner = caller.id if caller is not None else None
    places = None if caller is None or caller.scope == "admin" else [*storage.prefixes(caller.id), *caller.grants]

    def confine(uri: str, field: str) -> Location:
        return storage.confine(uri, field) if places is None else storage.confine_to(uri, field, places)

    source = storage.confine(input_url, "input_uri") if uploaded else confine(input_url, "input_uri")
    if source.local and not uploaded and not source.fs.isfile(source.path):
        raise StorageRefused(f"input_uri: there is no file at {input_url!r}", field="input_uri", uri=input_url)
    owned = options.get("output_uri") in (None, "")
    output = (storage.place(f"outputs/{job_id}.parquet", owner) if owned else
              confine(options["output_uri"], "output_uri"))
    if not owned and owner is not None:
        check_overwrite(gw, output, owner, str(options.get("overwrite", "")).lower() in ("true", "1", "yes"))
    if output.path == source.path and output.url.split("://")[0] == source.url.split("://")[0]:
        raise StorageRefused("output_uri must not be the input file", field="output_uri")
    if output.fs.isdir(output.path):
        raise StorageRefused(f"output_uri {output.url!r} is a folder; name a file in it", field="output_uri",
                             uri=output.url)
    lane = lane_for(QUEUE_BULK, caller.ordinal if caller is not None else 0)
    callback = options.get("callback_url")
    if callback not in (None, ""):
        callback = check_callback(callback, gw.settings.webhook_hosts, gw.settings.webhook_secret)
    columns = _columns(options.get("columns"))
    timeout = gw.parse_timeout(options.get("timeout"), gw.settings.timeout_chunk_seconds)
    explain = gw.parse_explain(options.get("explain"), pinned)
    key_column = options.get("key_column") or None
    if key_column is not None and (not isinstance(key_column, str) or len(key_column) > 200):
        raise BadRequest("key_column must name the input column holding each row's key (for outcomes)",
                         field="key_column")
    parts = storage.place(f"parts/{job_id}").url
    spec = {"kind": KIND_BATCH, "input": source.url, "output": output.url, "parts": parts, "columns": columns,
            "owned": owned, **({"timeout": timeout} if timeout else {}), **({"explain": True} if explain else {}),
            **({"key_column": key_column} if key_column else {})}
    extra: dict[str, Any] = {"kind": KIND_BATCH, "input": source.url, "output": output.url, "parts": parts}
    if owned:
        extra["owned"] = "1"
    if uploaded:
        extra["upload"] = "1"
    if callback:
        extra["callback_url"] = callback
    if owner is not None:
        extra["owner"] = owner
    if columns:
        extra["columns"] = ",".join(columns)
    if timeout:
        extra["timeout"] = f"{timeout:g}"
    if explain:
        extra["explain"] = "1"
    try:
        created = gw.jobs.create(job_id, pinned.model, pinned.version, pinned.sha256, Payload(orjson.dumps(spec), 0),
                                 QUEUE_BULK, pinned.alias, extra=extra, limit=gw.settings.max_queue_depth,
                                 lane=lane, share=gw.share())
    except TooManyRequests:
        if uploaded:  # refused: the upload goes at the sweeper's next look
            gw.batches.expire_files([source.url], 0)
        raise
    if uploaded:
        gw.batches.expire_files([source.url], gw.settings.batch_ttl_seconds)
    job = gw.jobs.get(created.job_id)  # as accepted: read before it is sent, or a fast worker's start shows
    try:
        gw.publisher.publish(job_id, lane)
    except Exception as exc:  # the job exists: the sweeper sends it
        log.warning("batch %s is accepted but its message could not be sent (%s); the sweeper will", job_id, exc)
    return job_response(job, 202)


def check_overwrite(gw: Gateway, output: Location, owner: str, overwrite: bool) -> None:
    """A named output another key's batch writes is refused; one that exists is replaced only on request."""
    other = gw.batches.claim_output(output.url, owner)
    if other is not None:
        raise Conflict(f"output_uri {output.url!r} is written by a batch of another key; name another file",
                       field="output_uri")
    if not overwrite and output.fs.exists(output.path):
        raise Conflict(f"output_uri {output.url!r} exists; ?overwrite=true replaces it", field="output_uri")


@batches.post("/models/<model>/batches")
def submit_batch(model: str) -> Response:
    gw = gateway()
    kind = require_media(ACCEPTED)
    pinned = gw.pin(model, request.args.get("version"), request.args.get("alias"))
    options: dict[str, Any] = {name: request.args.get(name) for name in OPTIONS if request.args.get(name)}
    job_id = new_job_id()
    if kind in JSON or kind.endswith("+json"):
        body = parse_json(read_body())
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object: {\"input_uri\": ..., \"output_uri\": ...}", field="body")
        unknown = sorted(set(body) - {"input_uri", *OPTIONS})
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)}; a batch takes input_uri, "
                             f"{', '.join(OPTIONS)}", field=unknown[0])
        if "input_uri" not in body:
            raise BadRequest("input_uri is required (or send the Parquet file itself as the body)",
                             field="input_uri")
        options.update({name: body[name] for name in OPTIONS if name in body})
        return _submit(gw, pinned, job_id, body["input_uri"], False, options)
    if options.get("callback_url"):  # refuse before reading a large body, where the query says enough
        check_callback(options["callback_url"], gw.settings.webhook_hosts, gw.settings.webhook_secret)
    caller = auth.caller()
    pinned_upload = gw.storage.place(f"uploads/{job_id}.parquet", caller.id if caller else None)
    limit = gw.settings.max_upload_bytes
    request.max_content_length = limit + 1
    if kind == MULTIPART:
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest("a multipart upload needs the Parquet file in a part named 'file'", field="file")
        options.update({name: request.form[name] for name in OPTIONS if request.form.get(name)})
        size = write_stream(pinned_upload, upload.stream.read, limit)
    else:
        size = write_stream(pinned_upload, request.stream.read, limit)
    try:
        if size == 0:
            raise BadRequest("the body is empty; send a Parquet file", field="body")
        return _submit(gw, pinned, job_id, pinned_upload.url, True, options)
    except BaseException:
        remove(pinned_upload)  # refused: the upload is not kept
        raise


@batches.get("/jobs/<job_id>/output")
def download_output(job_id: str) -> Response:
    gw = gateway()
    job = auth.check_owner(gw.jobs.get(job_id))
    if job.get("kind") != KIND_BATCH:
        raise NotFound(f"job {job_id} is not a batch file: its results are in the job itself", job=job_id)
    if job["state"] != SUCCEEDED:
        raise Conflict(f"job {job_id} is {job['state']}; its output exists once it has succeeded",
                       state=job["state"], job=job_id)
    location = gw.storage.confine(gw.jobs.fields(job_id, "output")[0] or "", "output_uri")
    if not location.fs.exists(location.path):
        raise NotFound(f"the output of job {job_id} is gone (outputs are kept "
                       f"{gw.settings.batch_ttl_seconds} s, or it was moved)", job=job_id)
    if location.local:
        return send_file(location.path, mimetype=PARQUET, as_attachment=True, download_name=f"{job_id}.parquet")

    def stream() -> Iterator[bytes]:
        with location.fs.open(location.path, "rb") as handle:
            while piece := handle.read(1 << 20):
                yield piece

    return Response(stream(), mimetype=PARQUET,
                    headers={"Content-Disposition": f'attachment; filename="{job_id}.parquet"'})
