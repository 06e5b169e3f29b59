"""Training one model from its spec: load data, derive fields, fit, evaluate, publish a bundle."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Published, Registry
from batcomputer.models.schema import CATEGORICAL, Schema
from batcomputer.settings import Settings
from training import datasets
from training.evaluation import evaluate, profile, time_scoring
from training.features import build_table
from training.pipeline import build_pipeline
from training.spec import Source, Spec, load_spec

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Trained:
    published: Published
    metrics: dict[str, Any]
    promoted: bool


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


BACKGROUND_KEPT = 200  # training rows a bundle keeps for explanations
IMPORTANCE_ROWS = 200  # holdout rows its global importance is measured on


def training_table(spec: Spec, source: Any, raw: Any, live: tuple[Any, Any] | None = None) -> tuple[Any, Any, Any]:
    """The fields and classes a model trains and is judged on: the source's rows, and after them ``live``
    rows (captured records whose outcomes came back, already fields: ``monitoring.monitor.labelled``)."""
    import numpy as np
    import pandas as pd

    table, y, report = build_table(spec, source, raw)
    if live is not None and len(live[1]):
        table = pd.concat([table, live[0][list(table.columns)]], ignore_index=True)
        y = np.concatenate([np.asarray(y), live[1]])
        report = {**report, "live_rows": len(live[1])}
    return table, y, report


def fit(spec: Spec, raw: Any, source_name: str, data: dict[str, Any], live: tuple[Any, Any] | None = None) -> Draft:
    """Fit and evaluate the spec's pipeline on a raw table (and ``live`` rows: ``training_table``); return the
    bundle draft."""
    source = spec.sources[source_name]
    table, y, report = training_table(spec, source, raw, live)
    x_train, x_test, y_train, y_test = train_test_split(table, y, test_size=spec.holdout, random_state=spec.seed,
                                                        stratify=y)
    pipeline = build_pipeline(spec)
    start = time.perf_counter()
    pipeline.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - start
    metrics = evaluate(pipeline, x_test, y_test, y_train, spec)
    metrics["data"] = report
    schema = Schema(model=spec.name, fields=spec.fields, outputs=spec.outputs, labels=spec.labels,
                    profile=profile(x_train, spec))
    timings = {"fit_seconds": round(fit_seconds, 3), **time_scoring(pipeline, x_test, seed=spec.seed)}
    background = field_records(x_train.sample(n=min(BACKGROUND_KEPT, len(x_train)), random_state=spec.seed), spec)
    metrics["importance"] = importance(pipeline, schema, background, field_records(
        x_test.sample(n=min(IMPORTANCE_ROWS, len(x_test)), random_state=spec.seed), spec))
    return Draft(model=spec.name, pipeline=pipeline, schema=schema, metrics=metrics, spec=spec.raw,
                 data={**data, "source": source_name}, timings=timings, git_commit=git_commit(),
                 background=background)


def field_records(frame: Any, spec: Spec) -> list[dict[str, Any]]:
    """Rows of a table of fields as records a worker scores: text for categories, numbers for numbers (whole
    ones for integer fields), None where absent."""
    import pandas as pd

    records = []
    for row in frame[[f.name for f in spec.fields]].itertuples(index=False):
        record: dict[str, Any] = {}
        for field, value in zip(spec.fields, row, strict=True):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                record[field.name] = None
            elif field.kind == CATEGORICAL:
                record[field.name] = str(value)
            else:
                record[field.name] = int(value) if field.integer else float(value)
        records.append(record)
    return records


def importance(pipeline: Any, schema: Schema, background: list[dict[str, Any]],
               holdout: list[dict[str, Any]]) -> dict[str, Any]:
    """Global importance: each field's mean absolute contribution to each output's probability over holdout
    rows (``batcomputer.models.explain``)."""
    from batcomputer.models.bundle import Bundle
    from batcomputer.models.explain import explain

    bundle = Bundle(schema.model, 0, "", {}, schema, {}, pipeline, background)
    explained = explain(bundle, holdout)
    result: dict[str, Any] = {"rows": len(holdout),
                              "baseline": explained[0]["baseline"] if explained else {}}
    for output in schema.outputs:
        means = {name: sum(abs(e["contributions"][output][name]) for e in explained) / max(len(explained), 1)
                 for name in schema.field_names}
        result[output] = {name: round(value, 6) for name, value in means.items()}
    return result


def load_source(spec: Spec, source: str | None, data_dir: Path) -> tuple[Source, Any, dict[str, Any]]:
    """The raw rows of a spec's source (``--source``: a source name, a file, or the default) and their
    fingerprint."""
    chosen, path = spec.pick_source(source)
    if path is not None:
        raw, data = datasets.load_file(path)
    else:
        assert chosen.dataset is not None
        raw, data = datasets.load_dataset(chosen.dataset, data_dir)
    return chosen, raw, data


def sample_records(name: str, rows: int, source: str | None, data_dir: Path, seed: int = 0,
                   outcomes: bool = False) -> Any:
    """``rows`` records a model takes, drawn with replacement from its source's usable rows (so categories
    come in their real proportions): a DataFrame of a ``record_id`` and the fields, text for categories (None
    where absent) and numbers for numbers; with ``outcomes``, also each record's real ``outcome`` (a label)."""
    import numpy as np
    import pandas as pd

    spec = load_spec(name)
    chosen, raw, _ = load_source(spec, source, data_dir)
    table, y, _ = build_table(spec, chosen, raw)
    drawn = np.random.default_rng(seed).integers(0, len(table), rows)
    picked = table.iloc[drawn].reset_index(drop=True)
    for field in spec.fields:
        column = picked[field.name]
        if field.kind == "categorical":
            picked[field.name] = [None if pd.isna(value) else str(value) for value in column]
        elif field.integer and column.notna().all():
            picked[field.name] = column.astype("int64")
    picked.insert(0, "record_id", np.arange(1, rows + 1))
    if outcomes:
        picked["outcome"] = [spec.labels[int(k)] for k in np.asarray(y)[drawn]]
    return picked


def train(settings: Settings, name: str, source: str | None = None, promote: bool = False,
          report: Callable[[str], None] = print) -> Trained:
    """Train the model ``name`` (a spec name or path) and publish it; with ``promote`` move ``production``."""
    spec = load_spec(name)
    chosen, raw, data = load_source(spec, source, Path(settings.data_dir))
    report(f"{spec.name}: training on {data['rows']} raw rows from {data['dataset']} (source {chosen.name})")
    draft = fit(spec, raw, chosen.name, data)
    registry = Registry.from_settings(settings)
    published = registry.publish(draft)
    promoted = False
    if promote and registry.aliases(spec.name).get(settings.default_alias) != published.version:
        registry.set_alias(spec.name, settings.default_alias, published.version, reason="batcomputer train --promote")
        promoted = True
    return Trained(published, draft.metrics, promoted)
