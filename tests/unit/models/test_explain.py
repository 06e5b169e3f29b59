"""Explanations: exact Shapley values add up to the prediction and equal a brute-force computation; beyond the
field threshold, the sampled estimate still adds up exactly and lies within its error of the exact values."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from batcomputer.errors import NotExplainable
from batcomputer.models import explain as explaining
from batcomputer.models.bundle import Bundle
from batcomputer.models.explain import explain
from batcomputer.models.schema import Field, Schema
from batcomputer.models.scoring import score


def small_model(numeric: int, rows: int = 400, seed: int = 1) -> tuple[Bundle, list[dict[str, Any]]]:
    """A fitted pipeline on one categorical field and ``numeric`` numeric ones, with its background rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], rows),
                          **{f"x{i}": rng.normal(size=rows).round(2) for i in range(numeric)}})
    signal = (frame["colour"] == "red") * 1.5 + sum(frame[f"x{i}"] * (i + 1) / numeric for i in range(numeric))
    target = (signal + rng.normal(size=rows) > 0.5).astype(int)
    pipeline = Pipeline([("encode", ColumnTransformer([("one_hot", OneHotEncoder(), ["colour"])],
                                                      remainder="passthrough")),
                         ("model", LogisticRegression())]).fit(frame, target)
    fields = (Field("colour", "categorical", categories=("red", "green", "blue")),
              *(Field(f"x{i}", "numeric", minimum=-10, maximum=10) for i in range(numeric)))
    schema = Schema(model="small", fields=fields, outputs=("no", "yes"), labels=("0", "1"))
    records = frame.to_dict("records")
    return Bundle("small", 1, "sha", {}, schema, {}, pipeline, records[:30]), records[200:205]


def brute_force(bundle: Bundle, record: dict[str, Any]) -> dict[str, float]:
    """Each field's Shapley value for the 'yes' output, straight from the definition, one coalition at a time."""
    names = bundle.schema.field_names
    background = pd.DataFrame(bundle.background)[names]

    def value(coalition: tuple[str, ...]) -> float:
        frame = background.copy()
        for name in coalition:
            frame[name] = record[name]
        return float(bundle.pipeline.predict_proba(frame)[:, 1].mean())

    m = len(names)
    found = {}
    for name in names:
        others = [n for n in names if n != name]
        total = 0.0
        for size in range(m):
            for coalition in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                total += weight * (value((*coalition, name)) - value(coalition))
        found[name] = total
    return found


def test_contributions_add_up_to_the_prediction_and_equal_brute_force() -> None:
    bundle, records = small_model(numeric=3)
    explained = explain(bundle, records)
    scored = score(bundle, records)
    for record, item, result in zip(records, explained, scored, strict=True):
        for output in ("no", "yes"):
            total = item["baseline"][output] + sum(item["contributions"][output].values())
            assert abs(total - result[output]) < 1e-9
        expected = brute_force(bundle, record)
        for name, value in expected.items():
            assert abs(item["contributions"]["yes"][name] - value) < 1e-9, name
        assert "error" not in item
    baseline = float(bundle.pipeline.predict_proba(pd.DataFrame(bundle.background))[:, 1].mean())
    assert abs(explained[0]["baseline"]["yes"] - baseline) < 1e-12


def test_all_records_and_coalitions_are_scored_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, records = small_model(numeric=2)
    calls: list[int] = []
    real = bundle.pipeline.predict_proba

    def counted(frame: Any) -> Any:
        calls.append(len(frame))
        return real(frame)

    monkeypatch.setattr(bundle.pipeline, "predict_proba", counted)
    explain(bundle, records)
    assert len(calls) == 1 and calls[0] > len(records) * 8


def test_beyond_the_threshold_a_sampled_estimate_adds_up_and_lies_within_its_error() -> None:
    bundle, records = small_model(numeric=explaining.EXACT_FIELDS + 1, seed=2)
    records = records[:2]
    sampled = explain(bundle, records)
    background = explaining.background_of(bundle)
    x = np.array([[r[n] for n in bundle.schema.field_names] for r in records], dtype=object)
    _, exact = explaining._exact(bundle, x, background)
    scored = score(bundle, records)
    for r, (item, result) in enumerate(zip(sampled, scored, strict=True)):
        total = item["baseline"]["yes"] + sum(item["contributions"]["yes"].values())
        assert abs(total - result["yes"]) < 1e-9
        for i, name in enumerate(bundle.schema.field_names):
            error = item["error"]["yes"][name]
            assert abs(item["contributions"]["yes"][name] - exact[r, i, 1]) <= 5 * error + 1e-9, name


def test_a_version_without_a_background_cannot_be_explained() -> None:
    bundle, records = small_model(numeric=1)
    bundle.background = None
    with pytest.raises(NotExplainable) as caught:
        explain(bundle, records)
    assert caught.value.status == 422 and "small@1" in caught.value.detail
