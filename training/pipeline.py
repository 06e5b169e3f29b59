"""The fitted artifact: one scikit-learn Pipeline from named raw fields to class probabilities."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sklearn.pipeline import Pipeline

from batcomputer.models.encoding import SchemaEncoder
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
    """Impute and encode the fields by their kinds (categories fixed by the spec), then the estimator."""
    fields = [(f.name, f.kind, f.categories, f.required) for f in spec.fields]
    return Pipeline([("encode", SchemaEncoder(fields)), ("classify", make_estimator(spec))])
