"""Prefect flows: retrain with an evaluation gate, score a batch file, promote, roll back.

``retrain`` fetches the data, validates it (columns, rows, class balance; drift per field against the
champion's training profile), trains a challenger, evaluates challenger and champion on the same holdout,
publishes the challenger (identical data, spec and code publish nothing new) and moves ``production`` only
when the policy allows: ``auto`` when the challenger is not worse than the champion by more than the spec's
margin and accepts every field and category the champion accepts, ``always`` regardless, ``never`` not at
all. The run leaves a markdown artifact with the comparison, the drift table and the decision.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from batcomputer.errors import BatcomputerError, DataError
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from orchestration.drift import Drift, field_drift

POLICIES = ("auto", "always", "never")


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

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "policy": self.policy, "version": self.version, "created": self.created,
                "promoted": self.promoted, "champion": self.champion, "reasons": self.reasons,
                "metrics": self.metrics,
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
    """Load what has been fetched and check it before anything is trained."""
    from training.datasets import load_dataset
    from training.features import build_table
    from training.spec import load_spec

    spec = load_spec(spec_name)
    source, _ = spec.pick_source(None)
    assert source.dataset is not None
    raw, data = load_dataset(source.dataset, Path(settings.data_dir), available=True)
    try:
        table, y, report = build_table(spec, source, raw)
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
            "report": report}


@task(cache_policy=NO_CACHE)
def train_and_compare(settings: Settings, spec_name: str, loaded: dict[str, Any], champion: int | None,
                      model: str) -> dict[str, Any]:
    """Fit the challenger; score challenger and champion on the challenger's holdout by the spec's metric."""
    from sklearn.model_selection import train_test_split

    from training.evaluation import evaluate
    from training.features import build_table
    from training.spec import load_spec
    from training.trainer import fit

    spec = load_spec(spec_name)
    source, _ = spec.pick_source(None)
    draft = fit(spec, loaded["raw"], source.name, loaded["data"])
    result: dict[str, Any] = {"draft": draft, "challenger": draft.metrics, "champion": None}
    if champion is not None:
        table, y, _ = build_table(spec, source, loaded["raw"])
        _, x_test, y_train, y_test = train_test_split(table, y, test_size=spec.holdout,
                                                      random_state=spec.seed, stratify=y)
        bundle = Registry.from_settings(settings).bundle(model, champion, pipeline=True)
        result["champion"] = evaluate(bundle.pipeline, x_test, y_test, y_train, spec)
        result["champion_schema"] = bundle.schema
    result["metric"], result["lower_is_better"], result["margin"] = spec.metric, spec.lower_is_better, spec.margin
    return result


def coverage_gaps(champion: Any, challenger: Any) -> list[str]:
    """Fields and categories the champion accepts that the challenger would refuse."""
    gaps = []
    theirs = {f.name: f for f in challenger.fields}
    for old in champion.fields:
        new = theirs.get(old.name)
        if new is None:
            gaps.append(f"field {old.name!r} is gone")
            continue
        lost = sorted(set(old.categories or ()) - set(new.categories or ()))
        if lost:
            gaps.append(f"field {old.name!r} no longer accepts {', '.join(map(repr, lost))}")
        if old.kind != new.kind:
            gaps.append(f"field {old.name!r} changed from {old.kind} to {new.kind}")
    return gaps


def decide(policy: str, compared: dict[str, Any], gaps: list[str]) -> tuple[bool, list[str]]:
    """Whether to move production, and why."""
    metric, lower = compared["metric"], compared["lower_is_better"]
    challenger = float(compared["challenger"][metric])
    if policy == "never":
        return False, ["policy never: published without promotion"]
    if policy == "always":
        return True, ["policy always: promoted whatever the comparison"] + ([f"forced past: {g}" for g in gaps])
    if compared["champion"] is None:
        return True, ["no production version yet: the first version is promoted"]
    champion = float(compared["champion"][metric])
    margin = float(compared["margin"])
    worse_by = (challenger - champion) if lower else (champion - challenger)
    reasons = []
    if worse_by > margin:
        reasons.append(f"{metric} {challenger:.4f} is worse than production's {champion:.4f} by {worse_by:.4f}, "
                       f"more than the margin {margin:g}")
    reasons.extend(f"blocked: {gap}" for gap in gaps)
    if reasons:
        return False, reasons
    verdict = "better than" if worse_by < 0 else "within the margin of"
    return True, [f"{metric} {challenger:.4f} is {verdict} production's {champion:.4f} (margin {margin:g})"]


def report(decision: Decision) -> str:
    lines = [f"# Retrain {decision.model}: {'promoted' if decision.promoted else 'not promoted'}", "",
             f"Policy `{decision.policy}`; published version {decision.version} "
             f"({'new' if decision.created else 'identical to an existing version: nothing new published'}); "
             f"production was {decision.champion}.", "", "## Decision", ""]
    lines += [f"- {reason}" for reason in decision.reasons]
    lines += ["", "## Challenger and champion on the same holdout", "", "| metric | challenger | champion |",
              "|---|---|---|"]
    for name, values in decision.metrics.items():
        champion = values.get("champion")
        lines.append(f"| {name} | {values['challenger']:.4f} | {'-' if champion is None else f'{champion:.4f}'} |")
    lines += ["", "## Drift of the new data against the champion's training data (PSI)", ""]
    if decision.drift:
        lines += ["| field | PSI | level | note |", "|---|---|---|---|"]
        lines += [f"| {d.field} | {'-' if d.psi is None else f'{d.psi:.4f}'} | {d.level} | {d.note} |"
                  for d in decision.drift]
    else:
        lines.append("No champion to compare with.")
    return "\n".join(lines)


@flow(name="retrain", log_prints=True)
def retrain(model: str, policy: str = "auto", spec: str | None = None, fetch: bool = True,
            settings: Settings | None = None) -> dict[str, Any]:
    """Retrain ``model`` (from its spec, or ``spec``: another spec file of the same model) and publish it;
    move production by ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    settings = settings or Settings.from_env()
    from training.spec import load_spec

    spec_name = spec or model
    loaded_spec = load_spec(spec_name)
    if loaded_spec.name != model:
        raise ValueError(f"spec {spec_name!r} trains {loaded_spec.name!r}, not {model!r}")
    registry = Registry.from_settings(settings)
    aliases = registry.aliases(model) if model in registry.models() else {}
    champion = aliases.get(settings.default_alias)
    champion_schema = registry.schema(model, champion) if champion is not None else None
    source, _ = loaded_spec.pick_source(None)
    if fetch and source.dataset:
        fetch_data(settings, source.dataset)
    loaded = load_and_validate(settings, spec_name, champion_schema)
    compared = train_and_compare(settings, spec_name, loaded, champion, model)
    draft = compared["draft"]
    draft.run = {"flow": "retrain", "flow_run_id": str(flow_run.get_id() or ""), "policy": policy}
    published = registry.publish(draft)
    gaps = coverage_gaps(champion_schema, draft.schema) if champion_schema is not None else []
    promote, reasons = decide(policy, compared, gaps)
    decision = Decision(model, policy, published.version, published.created, False, champion, reasons,
                        drift=loaded["drift"])
    metric = compared["metric"]
    for name in dict.fromkeys((metric, "log_loss", "roc_auc", "pr_auc", "accuracy")):
        decision.metrics[name] = {"challenger": float(compared["challenger"][name]),
                                  **({"champion": float(compared["champion"][name])} if compared["champion"] else {})}
    if promote and champion == published.version:
        decision.reasons.append("production already is this version")
    elif promote:
        registry.set_alias(model, settings.default_alias, published.version, by=actor(),
                           reason="; ".join(reasons)[:1000])
        decision.promoted = True
    create_markdown_artifact(report(decision), key=f"retrain-{model}".replace("_", "-").lower(),
                             description=f"Retrain {model}: challenger vs champion, drift, decision")
    print(f"{model}: version {published.version} ({'new' if published.created else 'unchanged'}); "
          f"{'promoted' if decision.promoted else 'not promoted'}: {'; '.join(decision.reasons)}")
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
