"""The monitor flow: drift of captured traffic per model (``batcomputer.monitoring.monitor``), kept for the
gateway, shown as an artifact, and, when a field's drift is major in the last hour or live quality is worse
than the holdout's by the version's margin (``[monitor]`` in its spec), a Prefect event that the model's retrain
deployment is triggered by (``orchestration.deployments``): at most once per cooldown, so one
drift never starts a loop of retrains."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from batcomputer.jobqueue.connection import redis_client
from batcomputer.models.registry import Registry
from batcomputer.monitoring.monitor import watch
from batcomputer.monitoring.outcomes import OutcomeStore
from batcomputer.monitoring.store import MonitorStore
from batcomputer.settings import Settings

DRIFT_ALERT = "batcomputer.drift.alert"  # the event a retrain deployment's trigger expects


def model_resource(model: str) -> str:
    """The Prefect resource id of a model, as events name it and triggers match it."""
    return f"batcomputer.model.{model}"


def alert_reason(alerts: list[dict[str, Any]]) -> str:
    """The alerts in one line, as the retrain the event starts records why it ran."""
    parts = [f"version {a['version']} {a['field']} PSI {a['psi']:.3f}" if a.get("field") else
             f"version {a['version']} live {a['metric']} {a['live']:.4f} against holdout {a['holdout']:.4f}"
             for a in alerts]
    return "monitor alert: " + "; ".join(parts)


@flow(name="monitor", log_prints=True)
def monitor(model: str, settings: Settings | None = None) -> dict[str, Any]:
    """Watch ``model``'s captured traffic; emit ``DRIFT_ALERT`` when the drift is major (once per cooldown)."""
    settings = settings or Settings.from_env()
    if not settings.capture_root:
        print("capture is off (BATCOMPUTER_CAPTURE_ROOT is unset): nothing to watch")
        return {"model": model, "state": "off"}
    client = redis_client(settings)
    result = watch(settings, Registry.from_settings(settings), model, outcomes=OutcomeStore(client,
                                                                                        settings.key_prefix))
    store = MonitorStore(client, settings.key_prefix)
    last = float((store.load(model) or {}).get("retrain_requested_at") or 0)
    now = time.time()
    result["retrain_requested_at"] = last or None
    if result["state"] == "alert" and now - last >= settings.drift_cooldown_seconds:
        reason = alert_reason(result["alerts"])
        emit_event(DRIFT_ALERT, resource={"prefect.resource.id": model_resource(model)},
                   payload={"alerts": result["alerts"], "reason": reason})
        result["retrain_requested_at"] = now
        print(f"{model}: {reason}: retrain requested")
    store.save(result)
    create_markdown_artifact(report(result), key=f"monitor-{model}".replace("_", "-").lower(),
                             description=f"Drift of {model}'s captured traffic")
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"# Monitor {result['model']}: {result['state']}", ""]
    for window, versions in result["windows"].items():
        for version, seen in versions.items():
            lines += [f"## Last {window}, version {version}: {seen['records']} records", "",
                      "| field | PSI | level | warned | note |", "|---|---|---|---|---|"]
            for drift in seen["fields"]:
                psi = "-" if drift["psi"] is None else f"{drift['psi']:.4f}"
                lines.append(f"| {drift['field']} | {psi} | {drift['level']} | {drift['warning_rate']:.1%} | "
                             f"{drift['note']} |")
            lines.append("")
    return "\n".join(lines)
