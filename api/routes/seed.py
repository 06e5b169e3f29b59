"""The seed's synchronous API, kept for its existing clients: /api/predict, /api/predict/params, /api/info."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

import batcomputer
from api import auth
from api.context import gateway, read_body
from api.gateway import check_key
from api.problems import problem_response
from batcomputer.errors import BatcomputerError

seed = Blueprint("seed", __name__, url_prefix="/api")


@seed.errorhandler(BatcomputerError)
def seed_error(error: BatcomputerError) -> Response:
    """The seed answered bad input with 400 and {"error": "..."}: keep that, beside the problem details."""
    response = problem_response(error)
    body = response.get_json()
    body["error"] = error.detail
    if 400 <= error.status < 500 and error.status not in (401, 403, 404, 405, 409, 413, 415, 429):
        body["status"] = 400
        response.status_code = 400
    response.set_data(jsonify(body).get_data())
    return response


@seed.post("/predict")
def predict() -> dict[str, Any]:
    gw = gateway()
    model = request.args.get("model") or gw.settings.default_model
    key = request.args.get("key")
    pinned = gw.route(model, request.args.get("version"), request.args.get("alias"), key)
    caller = auth.caller()
    timeout = gw.parse_timeout(request.args.get("timeout"), gw.settings.timeout_records_seconds)
    explain = gw.parse_explain(request.args.get("explain"), pinned)
    submitted = gw.submit_body(pinned, read_body(), wait=gw.settings.predict_timeout_seconds, single=True,
                               owner=caller, timeout=timeout, explain=explain,
                               key=check_key(key, "key") if key is not None else None)
    result = dict(gw.results_of(submitted, "the record")[0])
    result.pop("label", None)
    if request.args.get("warnings", "").lower() not in ("true", "1", "yes"):
        result.pop("warnings", None)  # the seed's shape, unless asked
    return result


@seed.get("/predict/params")
def params() -> dict[str, Any]:
    gw = gateway()
    model = request.args.get("model") or gw.settings.default_model
    schema = gw.pin(model, request.args.get("version"), request.args.get("alias")).schema
    return {f.name: list(f.categories or ()) if f.kind == "categorical" else 0 for f in schema.fields}


@seed.get("/info")
def info() -> dict[str, Any]:
    gw = gateway()
    model = request.args.get("model") or gw.settings.default_model
    pinned = gw.pin(model, request.args.get("version"), request.args.get("alias"))
    bundle = gw.registry.bundle(model, pinned.version)
    return {"status": "alive", "metadata": {
        "name": model, "version": pinned.version, "alias": pinned.alias, "sha256": pinned.sha256,
        "created": bundle.manifest.get("created"), "outputs": list(pinned.schema.outputs),
        "fields": pinned.schema.field_names, "metrics": {k: bundle.metrics.get(k) for k in
                                                         ("log_loss", "roc_auc", "pr_auc", "accuracy")},
        "batcomputer": batcomputer.__version__}}
