"""The Open Inference Protocol ("V2" of KServe, Triton and MLServer) over REST, on the same jobs and micro-batches.

Each named field is one input tensor (``BYTES`` for categories, ``INT64`` or ``FP64`` for numbers, shape
``[n]`` for n records); the n records become one job, pinned when the request is accepted (no version in the
path: the production alias), scored as one member of a micro-batch. Outputs come back one tensor per named
output, plus ``label``; warnings are in the response's ``parameters``. Tensors may come as JSON or in Triton's
binary extension (what ``tritonclient`` sends by default). Errors are problem details with the protocol's
``error`` beside them, as ``application/json``.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

import batcomputer
from api import auth
from api.context import gateway, read_body
from api.gateway import Pinned, parse_json
from api.problems import PROBLEM_TYPE
from api.tensors import BINARY_HEADER, datatype, decode_request
from batcomputer.errors import BadRequest, Unavailable

v2 = Blueprint("v2", __name__, url_prefix="/v2")
LABEL = "label"
INFER_MEDIA = ("application/json", "application/octet-stream")


@v2.after_request
def protocol_errors(response: Response) -> Response:
    """Errors in the protocol's shape, ``{"error": "..."}`` as ``application/json`` (what its clients read),
    with every field of the problem details beside it (status unchanged)."""
    if response.status_code >= 400 and response.mimetype == PROBLEM_TYPE:
        body = orjson.loads(response.get_data())
        body.setdefault("error", body.get("detail"))
        response.set_data(orjson.dumps(body))
        response.mimetype = "application/json"
    return response


def as_json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


@v2.get("/health/live")
def health_live() -> Response:
    return as_json({"live": True})


@v2.get("/health/ready")
def health_ready() -> Response:
    """Ready when Redis answers and the registry serves at least one model (workers are not asked)."""
    gw = gateway()
    try:
        gw.redis.ping()
    except Exception as exc:
        raise Unavailable(f"Redis is unreachable: {exc}", retry_after=5) from None
    if not gw.registry.models():
        raise Unavailable("the registry holds no model yet", retry_after=30)
    return as_json({"ready": True})


@v2.get("")
def server_metadata() -> Response:
    return as_json({"name": "batcomputer", "version": batcomputer.__version__, "extensions": ["binary_tensor_data"]})


@v2.get("/models/<model>")
@v2.get("/models/<model>/versions/<version>")
def model_metadata(model: str, version: str | None = None) -> Response:
    gw = gateway()
    pinned = gw.pin(model, version)
    schema = pinned.schema
    versions = [str(v) for v in gw.registry.versions(model)] if version is None else [str(pinned.version)]
    return as_json({
        "name": model, "versions": versions, "platform": "scikit-learn",
        "inputs": [{"name": f.name, "datatype": datatype(f), "shape": [-1],
                    "parameters": {"required": f.required}} for f in schema.fields],
        "outputs": [*({"name": name, "datatype": "FP64", "shape": [-1]} for name in schema.outputs),
                    {"name": LABEL, "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"version": pinned.version, "alias": pinned.alias, "sha256": pinned.sha256}})


@v2.get("/models/<model>/ready")
@v2.get("/models/<model>/versions/<version>/ready")
def model_ready(model: str, version: str | None = None) -> Response:
    """Ready when the version resolves and its bundle verifies (every file hashed, as /readyz does)."""
    gw = gateway()
    pinned = gw.pin(model, version)
    gw.registry.bundle(model, pinned.version)
    return as_json({"name": model, "version": str(pinned.version), "ready": True})


@v2.post("/models/<model>/infer")
@v2.post("/models/<model>/versions/<version>/infer")
def infer(model: str, version: str | None = None) -> Response:
    gw = gateway()
    pinned = gw.pin(model, version)
    raw = read_body(INFER_MEDIA, typeless=True)  # tritonclient sends no Content-Type
    header_length = request.headers.get(BINARY_HEADER)
    body, binary = (raw, b"") if header_length is None else split_binary(raw, header_length)
    inference = decode_request(parse_json(body), binary)
    gw.check_count(len(inference.records))
    wanted = requested_outputs(inference.outputs, pinned)
    caller = auth.caller()
    submitted = gw.submit(pinned, inference.records, wait=gw.settings.predict_timeout_seconds,
                          owner=caller)
    results = gw.results_of(submitted, "the records")
    job = submitted.job
    outputs = []
    for name in wanted:
        values = [result.get(name) for result in results]
        outputs.append({"name": name, "datatype": "BYTES" if name == LABEL else "FP64", "shape": [len(values)],
                        "data": values})
    answer: dict[str, Any] = {"model_name": model, "model_version": str(pinned.version), "outputs": outputs,
                              "parameters": {"job": job["id"], "sha256": pinned.sha256,
                                             "warnings": [result.get("warnings", []) for result in results]}}
    if inference.id is not None:
        answer["id"] = inference.id
    return as_json(answer)


def split_binary(raw: bytes, header_length: str) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensors after it (Triton's binary tensor extension)."""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise BadRequest(f"{BINARY_HEADER} must be the length of the JSON header in bytes, at most the body's "
                         f"{len(raw)}", field=BINARY_HEADER)
    length = int(header_length)
    return raw[:length], raw[length:]


def requested_outputs(requested: list[str] | None, pinned: Pinned) -> list[str]:
    """The outputs to return: those asked for, in that order, or all of them (named outputs, then label)."""
    known = [*pinned.schema.outputs, LABEL]
    if requested is None:
        return known
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}: {pinned.model} gives {', '.join(known)}", field="outputs",
                         allowed=known)
    return requested
