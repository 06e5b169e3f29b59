"""Model routes: list models, describe one (versions, aliases, schema, metrics), move aliases over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, request

from api import auth
from api.context import gateway, read_body
from api.gateway import HEADLINE_METRICS, parse_json
from batcomputer.errors import BadRequest, BatcomputerError
from batcomputer.models.registry import MAX_VERSION, Registry

models = Blueprint("models", __name__, url_prefix="/api/models")



def describe(registry: Registry, model: str, alias: str,
             facts: Callable[[str, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """A model's versions (with ``facts`` of each: headline metrics, the run that published it), aliases, the
    current version's metrics and schema."""
    aliases = registry.aliases(model)
    versions = []
    for version in registry.versions(model):
        entry = registry.entry(model, version)
        versions.append({"version": version, "created": entry["created"], "sha256": entry["manifest_sha256"],
                         "aliases": sorted(a for a, v in aliases.items() if v == version),
                         **(facts(model, version) if facts else {})})
    current = aliases.get(alias, versions[-1]["version"] if versions else None)
    bundle = registry.bundle(model, current)
    return {"name": model, "versions": versions, "aliases": aliases, "current": {"version": current, "alias": alias
            if alias in aliases else None}, "metrics": {k: bundle.metrics.get(k) for k in HEADLINE_METRICS},
            "schema": bundle.schema.to_json()}


@models.get("")
def list_models() -> dict[str, Any]:
    gw = gateway()
    found = []
    for model in gw.registry.models():
        try:
            info = describe(gw.registry, model, gw.settings.default_alias)
        except BatcomputerError as exc:  # one broken model must not hide the others
            found.append({"name": model, "error": {"code": exc.code, "detail": exc.detail}})
            continue
        info.pop("schema")
        found.append(info)
    return {"models": found}


@models.get("/<model>")
def show_model(model: str) -> dict[str, Any]:
    """The model with every version's headline metrics and publishing run, and the history of its aliases
    (newest first)."""
    gw = gateway()
    info = describe(gw.registry, model, request.args.get("alias", gw.settings.default_alias), gw.version_facts)
    bundle = gw.registry.bundle(model, info["current"]["version"])
    info["metrics"] = bundle.metrics
    info["history"] = sorted(gw.registry.history(model), key=lambda move: str(move.get("at", "")), reverse=True)
    return info


def object_body() -> dict[str, Any]:
    raw = read_body()
    body = parse_json(raw) if raw else {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", field="body")
    return body


def check_reason(body: dict[str, Any]) -> None:
    """``reason`` is the client's to give; who moved the alias (``by``) is the calling key, never client text."""
    if "by" in body:
        raise BadRequest("by is not accepted: the alias history records the calling key's name", field="by")
    if body.get("reason") is not None and not isinstance(body["reason"], str):
        raise BadRequest("reason must be a string", field="reason")


@models.put("/<model>/aliases/<alias>")
def move_alias(model: str, alias: str) -> dict[str, Any]:
    body = object_body()
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise BadRequest(f"version must be a whole number from 1 to {MAX_VERSION}", field="version")
    check_reason(body)
    pin = body.get("pin")
    if pin is not None and not isinstance(pin, bool):
        raise BadRequest("pin must be true (hold it there against automatic moves) or false", field="pin")
    registry = gateway().registry
    move = registry.set_alias(model, alias, version, by=auth.actor(),
                              reason=str(body.get("reason") or "PUT alias over HTTP"), pin=pin)
    return {"move": move, "aliases": registry.aliases(model), "pin": registry.pin(model, alias)}


@models.delete("/<model>/aliases/<alias>/pin")
def unpin_alias(model: str, alias: str) -> dict[str, Any]:
    """Let automatic moves (retraining) move the alias again; it stays where it points."""
    body = object_body()
    check_reason(body)
    registry = gateway().registry
    move = registry.unpin(model, alias, by=auth.actor(), reason=str(body.get("reason") or "unpinned over HTTP"))
    return {"move": move, "aliases": registry.aliases(model), "pin": None}


@models.post("/<model>/rollback")
def rollback(model: str) -> dict[str, Any]:
    body = object_body()
    check_reason(body)
    gw = gateway()
    alias = str(body.get("alias") or gw.settings.default_alias)
    move = gw.registry.rollback(model, alias, by=auth.actor(), reason=str(body.get("reason") or "rollback over HTTP"))
    registry = gw.registry
    return {"move": move, "aliases": registry.aliases(model)}
