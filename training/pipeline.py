"""The fitted artifact: one scikit-learn Pipeline from named raw fields to class probabilities."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from batcomputer.schema import CATEGORICAL
from training.spec import Spec


def make_estimator(spec: Spec) -> Any:
    """Instantiate the spec's estimator, seeding it when it takes a random_state."""
    module_name, class_name = spec.estimator.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    params = dict(spec.estimator_params)
    if "random_state" in inspect.signature(cls).parameters:
        params.setdefault("random_state", spec.seed)
    return cls(**params)


def build_pipeline(spec: Spec) -> Pipeline:
    """Impute and encode each field by its kind (categories fixed by the spec), then the estimator."""
    transformers = []
    for field in spec.fields:
        if field.kind == CATEGORICAL:
            steps = make_pipeline(
                SimpleImputer(strategy="most_frequent"),
                OneHotEncoder(categories=[list(field.categories or ())], handle_unknown="ignore",
                              sparse_output=False, dtype="float64"),
            )
        else:
            steps = make_pipeline(SimpleImputer(strategy="median", add_indicator=not field.required,
                                                keep_empty_features=True))
        transformers.append((field.name, steps, [field.name]))
    encoder = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("encode", encoder), ("classify", make_estimator(spec))])
