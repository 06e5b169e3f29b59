"""Retraining over HTTP: start the retrain flow on the Prefect server, and list a model's latest retrain runs
with their decisions (from the runs' ``retrain-<model>`` artifacts)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flask import Blueprint, Response, jsonify

from api.context import gateway, read_body
from api.gateway import Gateway, parse_json
from batcomputer.errors import BadRequest, ModelNotFound, Unavailable

retraining = Blueprint("retraining", __name__, url_prefix="/api/models")
POLICIES = ("auto", "always", "never")
DEPLOYMENT = "retrain/retrain"  # flow name / deployment name (orchestration.deployments)


TRANSIENT = (429, 502, 503, 504)  # answers Prefect's own client retries (a busy SQLite database answers 503)
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before each retry, unless the server's Retry-After says less


def _prefect(api_url: str, method: str, path: str, body: Any = None) -> Any:
    """One call of Prefect's REST API, retried on a transient answer (about 3.5 s at most); 503 otherwise."""
    data = json.dumps(body).encode() if body is not None else None
    for delay in (*RETRY_DELAYS, None):
        request = urllib.request.Request(f"{api_url.rstrip('/')}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise Unavailable(f"the Prefect server has no deployment {DEPLOYMENT!r}: is `batcomputer flows "
                                  f"serve` running?", retry_after=10) from None
            if exc.code not in TRANSIENT or delay is None:
                raise Unavailable(f"the Prefect server answered {exc.code}", retry_after=10) from None
            time.sleep(min(delay, _seconds(exc.headers.get("Retry-After"), delay)))
        except OSError as exc:
            raise Unavailable(f"the Prefect server at {api_url} cannot be reached ({exc})", retry_after=10) from None
    raise AssertionError("unreachable")


def _seconds(text: str | None, default: float) -> float:
    try:
        return max(0.0, float(text)) if text else default
    except ValueError:
        return default


def prefect_for(gw: Gateway, model: str, what: str) -> str:
    """The Prefect API URL, once ``model`` is known to exist; 503 naming ``what`` needs the server when none is
    configured."""
    if model not in gw.registry.models():
        raise ModelNotFound(f"model {model!r} is not in the registry", model=model)
    if not gw.settings.prefect_api_url:
        raise Unavailable(f"{what} a Prefect server: set BATCOMPUTER_PREFECT_API_URL (`batcomputer up` starts one)",
                          retry_after=60)
    return gw.settings.prefect_api_url


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
    api_url = prefect_for(gw, model, "retraining needs")
    deployment = _prefect(api_url, "GET", f"/deployments/name/{urllib.parse.quote(DEPLOYMENT)}")
    run = _prefect(api_url, "POST", f"/deployments/{deployment['id']}/create_flow_run",
                   {"parameters": {"model": model, "policy": policy}})
    return jsonify({"flow_run_id": run["id"], "flow_run_name": run.get("name"), "deployment": DEPLOYMENT,
                    "model": model, "policy": policy}), 202


def decision_of(markdown: str) -> dict[str, Any]:
    """The headline ("Retrain crime: promoted"), the gate's rule and the reasons of a retrain artifact's
    markdown."""
    lines = markdown.splitlines()
    headline = lines[0].lstrip("# ").strip() if lines else ""
    reasons, inside, rule = [], False, None
    for line in lines[1:]:
        if line.startswith("## "):
            inside = line.strip().startswith("## Decision")
            if inside and "rule `" in line:  # "## Decision (rule `within`)"
                rule = line.split("rule `", 1)[1].split("`", 1)[0]
        elif inside and line.startswith("- "):
            reasons.append(line[2:].strip())
    return {"headline": headline, "promoted": headline.endswith(": promoted"), "rule": rule, "reasons": reasons}


@retraining.get("/<model>/retrains")
def list_retrains(model: str) -> dict[str, Any]:
    """The latest retrain runs of ``model`` (newest first): state, times, policy, and the decision each
    recorded. 503 when no Prefect server is configured or reachable."""
    gw = gateway()
    api_url = prefect_for(gw, model, "retrain runs live on")
    key = f"retrain-{model}".replace("_", "-").lower()
    artifacts = _prefect(api_url, "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}},
                                                                 "sort": "CREATED_DESC", "limit": 20})
    by_run = {a.get("flow_run_id"): a for a in artifacts if a.get("flow_run_id")}
    runs = _prefect(api_url, "POST", "/flow_runs/filter", {  # runs that started (not those scheduled ahead)
        "flows": {"name": {"any_": ["retrain"]}}, "flow_runs": {"start_time": {"is_null_": False}},
        "sort": "START_TIME_DESC", "limit": 50})
    found = []
    for run in runs:
        if (run.get("parameters") or {}).get("model") != model:
            continue
        artifact = by_run.get(run["id"])
        found.append({"flow_run_id": run["id"], "name": run.get("name"),
                      "state": (run.get("state") or {}).get("type"), "started": run.get("start_time"),
                      "ended": run.get("end_time"), "policy": (run.get("parameters") or {}).get("policy", "auto"),
                      "reason": (run.get("parameters") or {}).get("reason") or None,
                      "decision": decision_of(str(artifact.get("data") or "")) if artifact else None})
    return {"model": model, "runs": found[:10]}
