"""The flows' deployments: retrain monthly (the police publish a month's data each month), the rest on
demand; ``serve`` runs them against the Prefect server in ``PREFECT_API_URL``."""

from __future__ import annotations

from typing import Any

from orchestration.flows import promote, retrain, rollback, score_batch
from orchestration.monitoring import DRIFT_ALERT, model_resource, monitor

RETRAIN_CRON = "0 6 2 * *"  # 06:00 on the 2nd of each month
MONITOR_SECONDS = 300  # how often the monitor looks at captured traffic


def build(interval_seconds: float | None = None, models: tuple[str, ...] = ("crime",)) -> list[Any]:
    """One scheduled retrain deployment per model (``interval_seconds`` instead of the monthly cron, for
    tests and demonstrations), and the on-demand flows."""
    schedule: dict[str, Any] = {"interval": interval_seconds} if interval_seconds else {"cron": RETRAIN_CRON}
    from prefect.events import DeploymentEventTrigger

    found = [retrain.to_deployment(name=f"retrain-{model}", parameters={"model": model, "policy": "auto"},
                                   description=f"Retrain {model} and promote it when it beats production; also "
                                               f"when the monitor finds major drift",
                                   triggers=[DeploymentEventTrigger(
                                       name=f"drift-{model}", expect={DRIFT_ALERT},
                                       match={"prefect.resource.id": model_resource(model)},
                                       parameters={"model": model, "policy": "auto",
                                                   "reason": "{{ event.payload.reason }}"})],
                                   **schedule) for model in models]
    found += [monitor.to_deployment(name=f"monitor-{model}", parameters={"model": model},
                                    description=f"Drift of {model}'s captured traffic", interval=MONITOR_SECONDS)
              for model in models]
    found += [retrain.to_deployment(name="retrain", description="Retrain a model now (parameters: model, policy)"),
              promote.to_deployment(name="promote"), rollback.to_deployment(name="rollback"),
              score_batch.to_deployment(name="score-batch")]
    return found


RUNS_AT_ONCE = 2  # retraining is CPU-bound: runs that come due together wait their turn


def serve(interval_seconds: float | None = None, models: tuple[str, ...] = ("crime",)) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*build(interval_seconds, models), limit=RUNS_AT_ONCE)
