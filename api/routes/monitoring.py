"""Watching production from the gateway: the monitor's latest look at a model's captured traffic, and the
outcomes clients send back (what really happened), which the monitor joins with the captured predictions."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api import auth
from api.context import gateway, read_body
from api.gateway import parse_json
from batcomputer.errors import BadRequest, ModelNotFound, NotFound, ValidationFailed
from batcomputer.monitoring.outcomes import MAX_ITEMS, OutcomeStore
from batcomputer.monitoring.store import MonitorStore

monitoring = Blueprint("monitoring", __name__, url_prefix="/api/models")


def check_model(model: str) -> None:
    if model not in gateway().registry.models():
        raise ModelNotFound(f"model {model!r} is not in the registry", model=model)


@monitoring.get("/<model>/monitoring")
def show_monitoring(model: str) -> dict[str, Any]:
    """The monitor's latest look at the model's captured traffic: drift per field and window, warning rates,
    label mix, live quality where outcomes came back, state and alerts (written by the monitor flow); and
    ``history``, the briefs of its latest looks (a day of them), oldest first, for plots over time."""
    check_model(model)
    gw = gateway()
    store = MonitorStore(gw.redis, gw.settings.key_prefix)
    found = store.load(model)
    if found is None:
        raise NotFound(f"no monitor result for {model!r} yet: capture must be on (BATCOMPUTER_CAPTURE_ROOT) and "
                       f"the monitor flow must have run (deployment monitor-{model})", model=model)
    return {**found, "history": store.history(model)}


@monitoring.post("/<model>/outcomes")
def post_outcomes(model: str) -> dict[str, Any]:
    """``{"outcomes": [{"job", "index", "label"}, ...]}``: what really happened to scored records. The valid
    ones are kept (again is harmless); if any is invalid, 422 lists each with its position, and says how many
    were kept."""
    check_model(model)
    gw = gateway()
    body = parse_json(read_body())
    items = body.get("outcomes") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest("the body is {\"outcomes\": [{\"job\": ..., \"index\": ..., \"label\": ...}, ...]}",
                         field="outcomes")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"{len(items)} outcomes in one request; the limit is {MAX_ITEMS}", field="outcomes",
                         limit=MAX_ITEMS)
    labels = gw.registry.schema(model, gw.settings.default_alias).labels
    caller = auth.caller()  # a key sends outcomes of its own jobs only
    kept, problems = OutcomeStore(gw.redis, gw.settings.key_prefix).record(model, labels, items,
                                                                          caller.id if caller else None)
    if problems:
        error = ValidationFailed(problems, f"{len(problems)} of {len(items)} outcomes were refused; {kept} kept")
        error.extra["kept"] = kept
        raise error
    return {"model": model, "kept": kept}
