"""Holdout evaluation, the per-field training profile for drift checks, and scoring speed."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from batcomputer.models.schema import CATEGORICAL
from training.spec import Spec

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def evaluate(pipeline: Any, x_test: pd.DataFrame, y_test: np.ndarray, y_train: np.ndarray,
             spec: Spec) -> dict[str, Any]:
    """Metrics that mean something under class imbalance, beside the no-skill baseline of the class prior."""
    proba = pipeline.predict_proba(x_test)[:, list(pipeline.classes_).index(1)]
    predicted = (proba >= 0.5).astype(int)
    prior = float(y_train.mean())
    positive = spec.labels[1]
    return {
        "metric": spec.metric,
        "lower_is_better": spec.lower_is_better,
        "positive_label": positive,
        "accuracy": float(accuracy_score(y_test, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, predicted)),
        "roc_auc": float(roc_auc_score(y_test, proba)),
        "pr_auc": float(average_precision_score(y_test, proba)),
        "log_loss": float(log_loss(y_test, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y_test, proba)),
        "baseline": {  # always predicting the training prior: what a useless model scores
            "accuracy": float(max(y_test.mean(), 1 - y_test.mean())),
            "pr_auc": float(y_test.mean()),
            "log_loss": float(log_loss(y_test, np.full(len(y_test), prior), labels=[0, 1])),
        },
        "class_balance": {
            "train_positive_rate": prior,
            "holdout_positive_rate": float(y_test.mean()),
            "holdout_predicted_positive_rate": float(predicted.mean()),  # the label mix the monitor compares with
        },
        "rows": {"train": len(y_train), "holdout": len(y_test)},
    }


def profile(x_train: pd.DataFrame, spec: Spec) -> dict[str, Any]:
    """Per field, on the training split: its rows and the share missing; category counts and frequencies, or
    numeric quantiles, histogram and mean."""
    result: dict[str, Any] = {}
    for field in spec.fields:
        column = x_train[field.name]
        entry: dict[str, Any] = {"rows": len(column), "missing": float(column.isna().mean())}
        if field.kind == CATEGORICAL:
            counts = column.value_counts()
            entry["counts"] = {str(c): int(counts.get(c, 0)) for c in field.categories or ()}
            present = max(int(counts.sum()), 1)  # frequencies among the rows that have a value
            entry["frequencies"] = {str(c): round(int(counts.get(c, 0)) / present, 6) for c in field.categories or ()}
        else:
            values = column.dropna().astype(float)
            entry["quantiles"] = {str(q): round(float(values.quantile(q)), 6) for q in QUANTILES} if len(values) else {}
            entry["histogram"] = histogram(values, spec) if len(values) else {}
            entry["mean"] = round(float(values.mean()), 6) if len(values) else None
        result[field.name] = entry
    return result


def histogram(values: pd.Series, spec: Spec) -> dict[str, Any]:
    """Shares of the values in bins cut at their own quantiles, ``(-inf, e1], (e1, e2], ... (ek, inf)``: what
    a retraining's drift check (population stability index) compares new data with."""
    edges = sorted({round(float(values.quantile(q)), 6) for q in QUANTILES[1:-1]})
    bins = np.searchsorted(np.asarray(edges), values.to_numpy(dtype=float), side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {"edges": edges, "shares": [round(float(c) / len(values), 6) for c in counts]}


def time_scoring(pipeline: Any, sample: pd.DataFrame, repeats: int = 30, rows: int = 100_000,
                 seed: int = 0) -> dict[str, float]:
    """Single-row latency (median of ``repeats`` calls) and the time of one ``rows``-row call."""
    one = sample.iloc[[0]]
    pipeline.predict_proba(one)
    singles = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline.predict_proba(one)
        singles.append(time.perf_counter() - start)
    big = sample.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)
    start = time.perf_counter()
    pipeline.predict_proba(big)
    elapsed = time.perf_counter() - start
    return {"predict_one_ms": round(statistics.median(singles) * 1000, 3),
            f"predict_{rows}_seconds": round(elapsed, 4),
            "rows_per_second": round(rows / elapsed)}
