"""The retrain route: start the retrain flow on the Prefect server and answer with its flow run."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flask import Blueprint, Response, jsonify

from api.context import gateway, read_body
from api.gateway import parse_json
from batcomputer.errors import BadRequest, ModelNotFound, Unavailable

retraining = Blueprint("retraining", __name__, url_prefix="/api/models")
POLICIES = ("auto", "always", "never")
DEPLOYMENT = "retrain/retrain"  # flow name / deployment name (orchestration.deployments)


def _prefect(api_url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api_url.rstrip('/')}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise Unavailable(f"the Prefect server has no deployment {DEPLOYMENT!r}: is `batcomputer flows serve` "
                              f"running?", retry_after=10) from None
        raise Unavailable(f"the Prefect server answered {exc.code}", retry_after=10) from None
    except OSError as exc:
        raise Unavailable(f"the Prefect server at {api_url} cannot be reached ({exc})", retry_after=10) from None


@retraining.post("/<model>/retrain")
def retrain(model: str) -> tuple[Response, int]:
    gw = gateway()
    raw = read_body()
    body = parse_json(raw) if raw else {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: {\"policy\": \"auto\"}", field="body")
    policy = body.get("policy", "auto")
    if policy not in POLICIES:
        raise BadRequest(f"policy must be one of {', '.join(POLICIES)}", field="policy")
    if model not in gw.registry.models():
        raise ModelNotFound(f"model {model!r} is not in the registry", model=model)
    api_url = gw.settings.prefect_api_url
    if not api_url:
        raise Unavailable("retraining needs a Prefect server: set BATCOMPUTER_PREFECT_API_URL (`batcomputer up` "
                          "starts one)", retry_after=60)
    deployment = _prefect(api_url, "GET", f"/deployments/name/{urllib.parse.quote(DEPLOYMENT)}")
    run = _prefect(api_url, "POST", f"/deployments/{deployment['id']}/create_flow_run",
                   {"parameters": {"model": model, "policy": policy}})
    return jsonify({"flow_run_id": run["id"], "flow_run_name": run.get("name"), "deployment": DEPLOYMENT,
                    "model": model, "policy": policy}), 202
