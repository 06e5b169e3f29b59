"""Prefect flows: retrain with an evaluation gate, score a batch file, promote, roll back.

``retrain`` fetches the data, validates it (columns, rows, class balance; drift per field against the
champion's training profile), trains a challenger, evaluates challenger and champion on the same holdout,
publishes the challenger (identical data, spec and code publish nothing new) and moves ``production`` only
when the gate allows (``orchestration.gate``: ``auto`` when the challenger beats the champion by the spec's
margin and accepts every field and category the champion accepts, or the champion is stale; ``always``
regardless; ``never`` not at all; a pinned production never). The run leaves a markdown artifact with the
comparison, the drift table and the decision with the rule that made it.
"""

from __future__ import annotations

import contextlib
import getpass
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from batcomputer.errors import AliasMoved, AliasPinned, BatcomputerError, DataError
from batcomputer.models.registry import Registry
from batcomputer.monitoring.drift import Drift, field_drift
from batcomputer.settings import Settings
from orchestration.gate import Verdict, age_days, coverage_gaps, decide

POLICIES = ("auto", "always", "never")
MAX_COMPARISONS = 3  # times a run compares again because production moved meanwhile


class RetrainRefused(BatcomputerError):
    """The data failed validation: nothing was trained."""

    code = "retrain_refused"
    status = 422
    title = "Retraining refused"


@dataclass
class Decision:
    """What a retraining decided, and why (the artifact and the flow's result)."""

    model: str
    policy: str
    version: int | None = None
    created: bool = False
    promoted: bool = False
    champion: int | None = None
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    drift: list[Drift] = field(default_factory=list)
    rule: str = ""  # the gate's rule that decided (orchestration.gate)
    comparisons: int = 1  # more than one: production moved while this run compared, and it compared again
    held: tuple[float, float] = (0.0, 0.0)  # when this run held its model's retrain slot: from, until (epoch s)
    # each field's mean absolute contribution to the last output on the holdout: {"challenger": {...}, "champion"}
    importance: dict[str, dict[str, float]] = field(default_factory=dict)
    live_rows: int = 0  # captured records with outcomes it trained and was judged on too ([retrain] live_days)
    live_drift: list[dict[str, Any]] = field(default_factory=list)  # the monitor's last hour of the champion
    trigger: str = ""  # why it ran, when something started it (a monitor alert's fields and figures)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "policy": self.policy, "version": self.version, "created": self.created,
                "promoted": self.promoted, "champion": self.champion, "rule": self.rule,
                "comparisons": self.comparisons, "held": list(self.held), "reasons": self.reasons,
                "metrics": self.metrics, "importance": self.importance, "live_rows": self.live_rows,
                "live_drift": self.live_drift, "trigger": self.trigger,
                "drift": [{"field": d.field, "psi": d.psi, "level": d.level, "note": d.note} for d in self.drift]}


def actor() -> str:
    """Who moves an alias from a flow: the flow run, by name and id."""
    try:
        name, run_id = flow_run.get_name(), flow_run.get_id()
    except Exception:  # outside a flow run
        return f"prefect:{getpass.getuser()}"
    return f"prefect:{name or 'flow'}:{run_id}" if run_id else f"prefect:{getpass.getuser()}"


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def fetch_data(settings: Settings, dataset: str) -> None:
    """Fetch (or verify) the dataset's files; the package index can fail transiently, hence the retries."""
    from training.datasets import fetch

    fetch(dataset, Path(settings.data_dir), report=get_run_logger().info)


@task(cache_policy=NO_CACHE)
def load_and_validate(settings: Settings, spec_name: str, champion_schema: Any) -> dict[str, Any]:
    """Load what has been fetched (and, with the spec's ``[retrain] live_days``, the captured records whose
    outcomes came back) and check it before anything is trained."""
    from training.datasets import load_dataset
    from training.spec import load_spec
    from training.trainer import training_table

    spec = load_spec(spec_name)
    source, _ = spec.pick_source(None)
    assert source.dataset is not None
    raw, data = load_dataset(source.dataset, Path(settings.data_dir), available=True)
    live = live_rows(settings, spec) if spec.live_days is not None else None
    try:
        table, y, report = training_table(spec, source, raw, live)
    except DataError as exc:
        raise RetrainRefused(f"the data does not fit the spec: {exc.detail}") from None
    if len(table) < spec.min_rows:
        raise RetrainRefused(f"only {len(table)} usable rows (the spec asks for at least {spec.min_rows})",
                             rows=len(table))
    positive = float(y.mean()) if len(y) else 0.0
    if not 0 < positive < 1 or min(int(y.sum()), int(len(y) - y.sum())) < 10:
        raise RetrainRefused(f"class balance: {positive:.1%} of rows are {spec.labels[1]!r}; both classes need "
                             f"at least 10 rows", positive_rate=positive)
    drift = field_drift(champion_schema, table) if champion_schema is not None else []
    return {"raw": raw, "data": data, "rows": len(table), "positive_rate": positive, "drift": drift,
            "report": report, "live": live, "live_rows": len(live[1]) if live is not None else 0}


def live_rows(settings: Settings, spec: Any) -> tuple[Any, Any]:
    """The captured records of the spec's model from its last ``live_days`` whose outcomes came back."""
    if not settings.capture_root:
        raise RetrainRefused("the spec trains on captured records ([retrain] live_days) and capture is off "
                             "(BATCOMPUTER_CAPTURE_ROOT)")
    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.monitoring.monitor import labelled
    from batcomputer.monitoring.outcomes import OutcomeStore

    outcomes = OutcomeStore(redis_client(settings), settings.key_prefix)
    return labelled(settings, spec.name, [f.name for f in spec.fields], spec.labels,
                    time.time() - spec.live_days * 86_400, outcomes)


def live_drift(settings: Settings, model: str, champion: int | None) -> list[dict[str, Any]]:
    """The monitor's last look at the champion's captured traffic: PSI per field over the last hour."""
    if champion is None:
        return []
    try:
        from batcomputer.jobqueue.connection import redis_client
        from batcomputer.monitoring.store import MonitorStore

        found = MonitorStore(redis_client(settings), settings.key_prefix).load(model) or {}
    except Exception as exc:  # no Redis here: the report says nothing of live traffic
        get_run_logger().warning("no live drift: %s", exc)
        return []
    seen = found.get("windows", {}).get("hour", {}).get(str(champion)) or {}
    return [{"field": f["field"], "psi": f.get("psi"), "records": seen.get("records", 0), "at": found.get("at")}
            for f in seen.get("fields", [])]


@task(cache_policy=NO_CACHE)
def train_and_compare(settings: Settings, spec_name: str, loaded: dict[str, Any], champion: int | None,
                      model: str) -> dict[str, Any]:
    """Fit the challenger; score challenger and champion on the challenger's holdout by the spec's metric."""
    from training.spec import load_spec
    from training.trainer import fit

    spec = load_spec(spec_name)
    source, _ = spec.pick_source(None)
    draft = fit(spec, loaded["raw"], source.name, loaded["data"], loaded.get("live"))
    result: dict[str, Any] = {"draft": draft, "challenger": draft.metrics, "champion": None}
    if champion is not None:
        result["champion"] = evaluate_champion(settings, spec_name, loaded, champion, model)
    result["metric"], result["lower_is_better"], result["margin"] = spec.metric, spec.lower_is_better, spec.margin
    return result


def evaluate_champion(settings: Settings, spec_name: str, loaded: dict[str, Any], champion: int,
                      model: str) -> dict[str, Any]:
    """The champion's metrics on the challenger's holdout (the same split: the spec's seed and fraction)."""
    from sklearn.model_selection import train_test_split

    from training.evaluation import evaluate
    from training.spec import load_spec
    from training.trainer import training_table

    spec = load_spec(spec_name)
    source, _ = spec.pick_source(None)
    table, y, _ = training_table(spec, source, loaded["raw"], loaded.get("live"))
    _, x_test, y_train, y_test = train_test_split(table, y, test_size=spec.holdout, random_state=spec.seed,
                                                  stratify=y)
    bundle = Registry.from_settings(settings).bundle(model, champion, pipeline=True)
    metrics: dict[str, Any] = evaluate(bundle.pipeline, x_test, y_test, y_train, spec)
    return metrics


def importance_of(output: str, challenger: dict[str, Any],
                  champion: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """The challenger's and the champion's global importance for ``output``, where their metrics hold it."""
    found = {}
    for who, metrics in (("challenger", challenger), ("champion", champion or {})):
        values = (metrics.get("importance") or {}).get(output)
        if values:
            found[who] = {name: float(value) for name, value in values.items()}
    return found


def report(decision: Decision) -> str:
    lines = [f"# Retrain {decision.model}: {'promoted' if decision.promoted else 'not promoted'}", "",
             f"Policy `{decision.policy}`; published version {decision.version} "
             f"({'new' if decision.created else 'identical to an existing version: nothing new published'}); "
             f"production was {decision.champion}.",
             *([f"Started by: {decision.trigger}."] if decision.trigger else []),
             "", f"## Decision (rule `{decision.rule}`)", ""]
    lines += [f"- {reason}" for reason in decision.reasons]
    lines += ["", "## Challenger and champion on the same holdout", "", "| metric | challenger | champion |",
              "|---|---|---|"]
    for name, values in decision.metrics.items():
        champion = values.get("champion")
        lines.append(f"| {name} | {values['challenger']:.4f} | {'-' if champion is None else f'{champion:.4f}'} |")
    if decision.importance.get("challenger"):
        before = decision.importance.get("champion") or {}
        lines += ["", "## What each field contributes (mean absolute contribution on the holdout)", "",
                  "| field | challenger | champion |", "|---|---|---|"]
        lines += [f"| {name} | {value:.4f} | {'-' if name not in before else f'{before[name]:.4f}'} |"
                  for name, value in sorted(decision.importance["challenger"].items(), key=lambda kv: -kv[1])]
    lines += ["", "## Drift of the new data against the champion's training data (PSI)", ""]
    if decision.drift:
        lines += ["| field | PSI | level | note |", "|---|---|---|---|"]
        lines += [f"| {d.field} | {'-' if d.psi is None else f'{d.psi:.4f}'} | {d.level} | {d.note} |"
                  for d in decision.drift]
    else:
        lines.append("No champion to compare with.")
    if decision.live_drift:
        lines += ["", f"## Drift of production's live traffic (the monitor's last hour, "
                      f"{decision.live_drift[0]['records']:,} captured records)", "", "| field | PSI |", "|---|---|"]
        lines += [f"| {d['field']} | {'-' if d['psi'] is None else format(d['psi'], '.4f')} |"
                  for d in decision.live_drift]
    if decision.live_rows:
        lines += ["", f"Trained and judged on {decision.live_rows:,} captured records whose outcomes came back, "
                      "beside the fetched data."]
    return "\n".join(lines)


@flow(name="retrain", log_prints=True)
def retrain(model: str, policy: str = "auto", spec: str | None = None, fetch: bool = True,
            settings: Settings | None = None, reason: str = "") -> dict[str, Any]:
    """Retrain ``model`` (from its spec, or ``spec``: another spec file of the same model) and publish it;
    move production by ``policy`` and the gate's rules (``orchestration.gate``). Retrains of one model run one
    at a time (a Prefect global concurrency limit), and production moves only if it still points where the
    flow compared; if it moved meanwhile, the flow compares with the new production again. ``reason``: why it
    runs (a monitor alert's fields and figures, passed by the deployment's event trigger)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    settings = settings or Settings.from_env()
    from training.spec import load_spec

    spec_name = spec or model
    loaded_spec = load_spec(spec_name)
    if loaded_spec.name != model:
        raise ValueError(f"spec {spec_name!r} trains {loaded_spec.name!r}, not {model!r}")
    limit = one_at_a_time(model)
    with concurrency(limit, occupy=1, strict=True):
        return _retrain(settings, model, policy, spec_name, loaded_spec, fetch, time.time(), reason)


def one_at_a_time(model: str) -> str:
    """The global concurrency limit (one slot) that retrains of ``model`` share, made if missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    name = f"retrain-{model}".replace("_", "-").lower()
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):  # an earlier run's
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


def _retrain(settings: Settings, model: str, policy: str, spec_name: str, loaded_spec: Any,
             fetch: bool, since: float, reason: str = "") -> dict[str, Any]:
    registry = Registry.from_settings(settings)
    alias = settings.default_alias
    aliases = registry.aliases(model) if model in registry.models() else {}
    champion = aliases.get(alias)
    champion_schema = registry.schema(model, champion) if champion is not None else None
    source, _ = loaded_spec.pick_source(None)
    if fetch and source.dataset:
        fetch_data(settings, source.dataset)
    loaded = load_and_validate(settings, spec_name, champion_schema)
    compared = train_and_compare(settings, spec_name, loaded, champion, model)
    draft = compared["draft"]
    draft.run = {"flow": "retrain", "flow_run_id": str(flow_run.get_id() or ""), "policy": policy}
    published = registry.publish(draft)
    promoted = False
    comparisons = 0
    for _ in range(MAX_COMPARISONS):
        comparisons += 1
        gaps = coverage_gaps(champion_schema, draft.schema) if champion_schema is not None else []
        moves = [m for m in registry.history(model, alias) if m.get("to") == champion] if champion else []
        verdict = decide(policy, compared, gaps, registry.pin(model, alias),
                         age_days(registry.entry(model, champion).get("created")) if champion else None,
                         loaded_spec.freshness_days, moves[-1]["by"] if moves else None)
        if not verdict.promote or champion == published.version:
            if verdict.promote:
                verdict.reasons.append("production already is this version")
            break
        try:
            registry.set_alias(model, alias, published.version, by=actor(), reason="; ".join(verdict.reasons)[:1000],
                               expect=champion, automatic=True)
            promoted = True
            break
        except AliasPinned as exc:
            verdict = Verdict(False, "pinned", [exc.detail])
            break
        except AliasMoved:  # someone moved production since the comparison: compare with it instead
            champion = registry.aliases(model).get(alias)
            champion_schema = registry.schema(model, champion) if champion is not None else None
            compared["champion"] = (evaluate_champion(settings, spec_name, loaded, champion, model)
                                    if champion is not None else None)
    else:
        verdict = Verdict(False, "moving", [f"production moved {MAX_COMPARISONS} times while this run compared"])
    decision = Decision(model, policy, published.version, published.created, promoted, champion, verdict.reasons,
                        drift=loaded["drift"], rule=verdict.rule, comparisons=comparisons, held=(since, time.time()),
                        live_rows=loaded["live_rows"], live_drift=live_drift(settings, model, champion),
                        trigger=reason)
    metric = compared["metric"]
    for name in dict.fromkeys((metric, "log_loss", "roc_auc", "pr_auc", "accuracy")):
        decision.metrics[name] = {"challenger": float(compared["challenger"][name]),
                                  **({"champion": float(compared["champion"][name])} if compared["champion"] else {})}
    decision.importance = importance_of(draft.schema.outputs[-1], draft.metrics,
                                        registry.bundle(model, champion).metrics if champion is not None else None)
    create_markdown_artifact(report(decision), key=f"retrain-{model}".replace("_", "-").lower(),
                             description=f"Retrain {model}: challenger vs champion, drift, decision")
    print(f"{model}: version {published.version} ({'new' if published.created else 'unchanged'}); "
          f"{'promoted' if decision.promoted else 'not promoted'} (rule {verdict.rule}): "
          f"{'; '.join(decision.reasons)}")
    return decision.to_json()


@flow(name="promote")
def promote(model: str, version: int, reason: str = "", alias: str | None = None,
            settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.from_env()
    return Registry.from_settings(settings).set_alias(model, alias or settings.default_alias, version, by=actor(),
                                                      reason=reason or "promote flow")


@flow(name="rollback")
def rollback(model: str, reason: str = "", alias: str | None = None,
             settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.from_env()
    return Registry.from_settings(settings).rollback(model, alias or settings.default_alias, by=actor(),
                                                     reason=reason or "rollback flow")


@flow(name="score-batch")
def score_batch(model: str, input_uri: str, output_uri: str | None = None, api_url: str | None = None,
                settings: Settings | None = None) -> dict[str, Any]:
    """Submit a Parquet file in the storage roots to the gateway and wait for the batch to end."""
    from batcomputer.files.client import Client

    settings = settings or Settings.from_env()
    client = Client(api_url or settings.api_url, api_key=settings.api_key)
    job = client.submit_uris(model, input_uri, output_uri)
    logger = get_run_logger()
    logger.info("batch %s accepted: %s", job["id"], input_uri)
    job = client.follow(job["id"], lambda found: None, poll=10)
    if job["state"] != "succeeded":
        raise RuntimeError(f"batch {job['id']} {job['state']}: {(job.get('error') or {}).get('detail', '')}")
    logger.info("batch %s: %s rows scored into %s", job["id"], job.get("rows_total"), job.get("output"))
    return job
