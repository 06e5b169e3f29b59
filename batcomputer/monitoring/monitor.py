"""Live drift over captured traffic: per model and version, over rolling windows (the last hour, the last
day), the population stability index of every field against that version's training profile, the share of
records with a warning on each field, and the label mix beside the one it predicted on its holdout; and the
state they add up to (``ok``, ``warn``, ``alert``). The monitor flow computes it; ``MonitorStore`` keeps the
latest result for the gateway."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from batcomputer.monitoring.drift import MAJOR, MODERATE, field_drift
from batcomputer.monitoring.store import STATES
from batcomputer.settings import Settings

WINDOWS = {"hour": 3_600, "day": 86_400}
MIN_RECORDS = 100  # fewer records in a window than this say nothing about drift: its state stays "ok"
LOWER_IS_BETTER = ("log_loss", "brier")  # quality metrics where less is better (the others: accuracy, AUCs)
CALIBRATION_BINS = 10  # equal-width bins of the predicted probability in live calibration


def read_window(root: str, options: dict[str, Any], model: str, since: float) -> Any:
    """The captured rows of ``model`` scored since ``since`` (epoch seconds), as an Arrow table."""
    import fsspec
    import pyarrow as pa
    import pyarrow.dataset as ds

    fs, path = fsspec.core.url_to_fs(root, **options)
    folder = f"{path.rstrip('/')}/model={model}"
    if not fs.exists(folder):
        return None
    day = datetime.fromtimestamp(since, UTC).date().isoformat()
    tree = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive")
    at = pa.scalar(int(since * 1000), type=pa.timestamp("ms", tz="UTC"))
    return tree.to_table(filter=(ds.field("date") >= day) & (ds.field("at") >= at))


def watch(settings: Settings, registry: Any, model: str, now: float | None = None,
          outcomes: Any = None) -> dict[str, Any]:
    """The monitor's view of ``model``: per window and version, records, drift per field, warning rates,
    label mix and, where ``outcomes`` (an ``OutcomeStore``) has what really happened, live quality beside the
    version's holdout figures; and the model's state (the worst of the hour's versions with enough records)."""
    now = time.time() if now is None else now
    result: dict[str, Any] = {"model": model, "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                              "thresholds": {"warn": MODERATE, "alert": MAJOR, "min_records": MIN_RECORDS},
                              "windows": {}, "state": "ok", "alerts": []}
    for window, seconds in WINDOWS.items():
        table = read_window(settings.capture_root or "", settings.capture_options, model, now - seconds)
        versions: dict[str, Any] = {}
        if table is not None and table.num_rows:
            frame = table.to_pandas()
            for version, rows in frame.groupby("version"):
                bundle = registry.bundle(model, int(str(version)))
                versions[str(version)] = describe(bundle.schema, rows)
                versions[str(version)]["thresholds"] = thresholds_of(bundle)
                versions[str(version)]["holdout_labels"] = holdout_mix(bundle)
                if outcomes is not None:
                    versions[str(version)]["quality"] = quality(bundle, rows, outcomes)
        result["windows"][window] = versions
    for version, seen in result["windows"].get("hour", {}).items():
        limits = seen["thresholds"]
        if seen["records"] < MIN_RECORDS:
            continue
        for drift in seen["fields"]:
            psi = drift["psi"] or 0
            level = "alert" if psi > limits["alert"] else "warn" if psi > limits["warn"] else "ok"
            drift["level"] = level
            raise_state(result, level)
            if level == "alert":
                result["alerts"].append({"version": int(version), "field": drift["field"], "psi": drift["psi"]})
        worse = worse_than_holdout(seen.get("quality") or {}, limits)
        if worse is not None:
            raise_state(result, "alert")
            result["alerts"].append({"version": int(version), **worse})
    return result


def raise_state(result: dict[str, Any], level: str) -> None:
    if STATES.index(level) > STATES.index(result["state"]):
        result["state"] = level


def thresholds_of(bundle: Any) -> dict[str, Any]:
    """A version's monitor thresholds: its spec's ``[monitor]`` table (``psi_warn``, ``psi_alert``,
    ``quality_margin``), else the defaults (PSI 0.1 and 0.25; quality worse than the holdout by the spec's
    ``margin``), and the spec's deciding ``metric``."""
    spec = bundle.manifest.get("spec") or {}
    table = spec.get("monitor") or {}
    return {"warn": float(table.get("psi_warn", MODERATE)), "alert": float(table.get("psi_alert", MAJOR)),
            "metric": spec.get("metric", "log_loss"),
            "quality_margin": float(table.get("quality_margin", spec.get("margin", 0.0)))}


def worse_than_holdout(quality: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any] | None:
    """The live figure of the deciding metric, when enough records came back and it is worse than the
    holdout's by more than the margin; else None."""
    metric = limits["metric"]
    live, holdout = quality.get(metric), (quality.get("holdout") or {}).get(metric)
    if quality.get("records", 0) < MIN_RECORDS or live is None or holdout is None:
        return None
    gap = live - holdout if metric in LOWER_IS_BETTER else holdout - live
    if gap <= limits["quality_margin"]:
        return None
    return {"metric": metric, "live": live, "holdout": holdout, "margin": limits["quality_margin"]}


def describe(schema: Any, rows: Any) -> dict[str, Any]:
    """One version's window: records, PSI per field, the share of records warned about each field, labels."""
    inputs = rows[[f"in_{name}" for name in schema.field_names]].rename(columns=lambda c: c[3:])
    warned: dict[str, int] = {}
    for text in rows["warnings"]:
        for warning in json.loads(text or "[]"):
            name = warning.get("field") if isinstance(warning, dict) else None
            if name:
                warned[name] = warned.get(name, 0) + 1
    count = len(rows)
    labels = rows["label"].value_counts(normalize=True)
    return {"records": count,
            "fields": [{"field": d.field, "psi": d.psi, "level": d.level, "note": d.note,
                        "warning_rate": round(warned.get(d.field, 0) / count, 4)}
                       for d in field_drift(schema, inputs)],
            "labels": {str(label): round(float(share), 4) for label, share in labels.items()}}


def holdout_mix(bundle: Any) -> dict[str, float] | None:
    """The label mix the version predicted on its holdout (the live ``labels`` are compared with it), or None
    for a version trained before it was recorded."""
    rate = (bundle.metrics.get("class_balance") or {}).get("holdout_predicted_positive_rate")
    labels = bundle.schema.labels
    if rate is None or len(labels) != 2:
        return None
    return {labels[0]: round(1 - float(rate), 4), labels[1]: round(float(rate), 4)}


def quality(bundle: Any, rows: Any, outcomes: Any) -> dict[str, Any]:
    """Live quality of a version over the captured rows whose outcome came back: log loss, accuracy and (two
    classes) ROC AUC, the Brier score and calibration, beside the same figures on the holdout the version was
    promoted on."""
    import numpy as np

    from batcomputer.monitoring.outcomes import outcome_key

    schema = bundle.schema
    truth = outcomes.lookup(schema.model, [outcome_key(str(i), int(n)) for i, n in zip(rows["id"], rows["index"],
                                                                                      strict=True)])
    known = [i for i, label in enumerate(truth) if label is not None]
    holdout = {name: bundle.metrics.get(name) for name in ("log_loss", "accuracy", "roc_auc", "brier")}
    if not known:
        return {"records": 0, "holdout": holdout}
    seen = rows.iloc[known]
    labels = [truth[i] for i in known]
    probability = np.array([seen[f"out_{schema.outputs[schema.labels.index(label)]}"].iloc[row]
                            for row, label in enumerate(labels)], dtype=float)
    found: dict[str, Any] = {
        "records": len(known),
        "log_loss": round(float(np.mean(-np.log(np.clip(probability, 1e-15, 1.0)))), 6),
        "accuracy": round(float(np.mean(np.array(labels) == seen["label"].to_numpy())), 6),
        "holdout": holdout}
    if len(schema.labels) == 2 and len(set(labels)) == 2:
        from sklearn.metrics import roc_auc_score

        positive = schema.labels[1]
        found["roc_auc"] = round(float(roc_auc_score([label == positive for label in labels],
                                                     seen[f"out_{schema.outputs[1]}"].to_numpy())), 6)
    if len(schema.labels) == 2:
        happened = np.array([label == schema.labels[1] for label in labels], dtype=float)
        predicted = seen[f"out_{schema.outputs[1]}"].to_numpy(dtype=float)
        found["brier"] = round(float(np.mean((predicted - happened) ** 2)), 6)
        found["calibration"] = calibration(predicted, happened)
    return found


def calibration(predicted: Any, happened: Any, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """How far predicted probabilities are from how often it happened: per equal-width bin of the predicted
    probability, the records, their mean prediction and the observed rate; and the expected calibration error
    (the records-weighted mean of the gaps)."""
    import numpy as np

    index = np.minimum((predicted * bins).astype(int), bins - 1)
    table, error = [], 0.0
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        if not count:
            continue
        mean, rate = float(predicted[chosen].mean()), float(happened[chosen].mean())
        error += count * abs(mean - rate)
        table.append({"from": b / bins, "to": (b + 1) / bins, "records": count, "predicted": round(mean, 6),
                      "observed": round(rate, 6)})
    return {"error": round(error / len(predicted), 6), "bins": table}


def labelled(settings: Settings, model: str, fields: list[str], labels: tuple[str, ...], since: float,
             outcomes: Any) -> tuple[Any, Any]:
    """The captured records of ``model`` (every version) scored since ``since`` whose outcome came back: a
    DataFrame of the fields (NaN where absent) and each one's class index in ``labels``; the latest capture of
    a record counts once."""
    import numpy as np
    import pandas as pd

    from batcomputer.monitoring.outcomes import outcome_key

    table = read_window(settings.capture_root or "", settings.capture_options, model, since)
    empty = (pd.DataFrame({name: [] for name in fields}), np.zeros(0, dtype=int))
    if table is None or not table.num_rows:
        return empty
    frame = table.to_pandas().drop_duplicates(subset=["id", "index"], keep="last")
    truth = outcomes.lookup(model, [outcome_key(str(i), int(n)) for i, n in zip(frame["id"], frame["index"],
                                                                                strict=True)])
    known = [i for i, label in enumerate(truth) if label in labels]
    if not known:
        return empty
    rows = frame.iloc[known]
    x = pd.DataFrame({name: rows[f"in_{name}"].to_numpy() for name in fields}).fillna(value=np.nan)
    return x, np.array([labels.index(str(truth[i])) for i in known], dtype=int)
