"""Scoring's fast paths give exactly what scikit-learn's own predict_proba gives, for every pipeline shape."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline

from batcomputer.models.encoding import SchemaEncoder
from batcomputer.models.scoring import predict_proba

FIELDS = [("colour", "categorical", ("red", "green", "blue"), True), ("size", "numeric", None, False),
          ("weight", "numeric", None, True)]
COLUMNS = [name for name, *_ in FIELDS]


def records(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"colour": rng.choice(["red", "green", "blue"]), "size": None if rng.random() < 0.2 else rng.random() * 9,
             "weight": rng.gauss(50, 10)} for _ in range(count)]


def fitted(classifier: Any) -> Pipeline:
    train = records(600, 1)
    labels = [int(r["colour"] == "red" and (r["size"] or 0) > 4) ^ (r["weight"] > 60) for r in train]
    return Pipeline([("encode", SchemaEncoder(FIELDS)), ("classify", classifier)]).fit(
        pd.DataFrame.from_records(train, columns=COLUMNS), labels)


@pytest.mark.parametrize("classifier", [RandomForestClassifier(n_estimators=30, random_state=0),
                                        ExtraTreesClassifier(n_estimators=20, random_state=0),
                                        HistGradientBoostingClassifier(max_iter=20, random_state=0)],
                         ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("count", [1, 7, 300])
def test_scores_equal_scikit_learn_s_own(classifier: Any, count: int) -> None:
    pipeline = fitted(classifier)
    batch = records(count, 2)
    expected = pipeline.predict_proba(pd.DataFrame.from_records(batch, columns=COLUMNS))
    assert np.array_equal(predict_proba(pipeline, batch, COLUMNS), expected)


def test_a_forest_that_runs_its_own_jobs_keeps_its_own_path() -> None:
    pipeline = fitted(RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=2))
    batch = records(50, 3)
    expected = pipeline.predict_proba(pd.DataFrame.from_records(batch, columns=COLUMNS))
    assert np.allclose(predict_proba(pipeline, batch, COLUMNS), expected)
