"""The stream producer route: validate records like any job and append them to the model's input stream."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, jsonify, request

from api.context import gateway, read_body
from api.gateway import parse_json, record_keys
from batcomputer.jobqueue.streams import StreamStore
from batcomputer.models.schema import validate_records

streams = Blueprint("streams", __name__, url_prefix="/api/models")


@streams.post("/<model>/stream")
def append(model: str) -> tuple[Response, int]:
    """One record or ``{"records": [...]}``; 202 with the entry ids, 429 with Retry-After past the backlog
    limit (nothing appended), 422 naming every field problem (nothing appended). ``?explain=true`` marks the
    entries (field ``explain``) so that their outputs carry their explanation. ``"keys"`` beside the records
    (or ``?key=`` for one) give each entry the client's key (field ``key``), to send its outcome by."""
    gw = gateway()
    pinned = gw.pin(model)
    explain = gw.parse_explain(request.args.get("explain"), pinned)
    sent = parse_json(read_body())
    records = validate_records(pinned.schema, gw.records_of(sent))
    keys = record_keys(sent, len(records), request.args.get("key"))
    store = StreamStore(gw.redis, gw.settings.key_prefix, model, gw.settings.stream_maxlen)
    ids = store.append([orjson.dumps(record) for record in records], gw.settings.stream_max_backlog,
                       meta={"explain": "true"} if explain else None, keys=keys)
    body: dict[str, Any] = {"model": model, "stream": store.input, "ids": ids}
    return jsonify(body), 202
