"""Watching production from the gateway: the monitor's latest look at a model's captured traffic, and the
outcomes clients send back (what really happened), which the monitor joins with the captured predictions."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from api import auth
from api.context import JSON, gateway, read_body
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


PARQUET = "application/vnd.apache.parquet"
MAX_FILE_ITEMS = 100_000  # outcomes in one Parquet file


def parquet_items(raw: bytes) -> list[dict[str, Any]]:
    """The rows of a Parquet file of outcomes as items: ``label``, and ``key`` or ``job`` (with ``index``)."""
    import pyarrow as pa  # only here: the gateway never loads pyarrow for anything else
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise BadRequest(f"the body is not a Parquet file: {exc}", field="body") from None
    wanted = [name for name in ("job", "index", "key", "label") if name in table.column_names]
    if "label" not in wanted or not {"job", "key"} & set(wanted):
        raise BadRequest(f"a file of outcomes has the columns label and job (with index) or key; it has "
                         f"{', '.join(table.column_names)}", field="body")
    if table.num_rows > MAX_FILE_ITEMS:
        raise BadRequest(f"{table.num_rows} outcomes in one file; the limit is {MAX_FILE_ITEMS}", field="outcomes",
                         limit=MAX_FILE_ITEMS)
    return [{k: v for k, v in row.items() if v is not None} for row in table.select(wanted).to_pylist()]


@monitoring.post("/<model>/outcomes")
def post_outcomes(model: str) -> dict[str, Any]:
    """``{"outcomes": [{"job", "index", "label"} or {"key", "label"}, ...]}``, or a Parquet file of such
    rows: what really happened to scored records. The valid ones are kept (again is harmless); if any is
    invalid, 422 lists each with its position, and says how many were kept."""
    check_model(model)
    gw = gateway()
    items: Any
    if request.mimetype == PARQUET:
        items, limit = parquet_items(read_body((PARQUET,))), MAX_FILE_ITEMS
    else:
        body = parse_json(read_body((*JSON, PARQUET)))  # a 415 names both
        items, limit = body.get("outcomes") if isinstance(body, dict) else None, MAX_ITEMS
    if not isinstance(items, list) or not items:
        raise BadRequest("the body is {\"outcomes\": [{\"job\": ..., \"index\": ..., \"label\": ...}, ...]}, or a "
                         "Parquet file with the columns label and job (with index) or key", field="outcomes")
    if len(items) > limit:
        raise BadRequest(f"{len(items)} outcomes in one request; the limit is {limit}", field="outcomes",
                         limit=limit)
    labels = gw.registry.schema(model, gw.settings.default_alias).labels
    caller = auth.caller()  # a key sends outcomes of its own jobs only
    kept, problems = OutcomeStore(gw.redis, gw.settings.key_prefix).record(model, labels, items,
                                                                          caller.id if caller else None)
    if problems:
        error = ValidationFailed(problems, f"{len(problems)} of {len(items)} outcomes were refused; {kept} kept")
        error.extra["kept"] = kept
        raise error
    return {"model": model, "kept": kept}
