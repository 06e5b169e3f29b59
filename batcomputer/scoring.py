"""Scoring validated records with a loaded bundle: one vectorised call, outputs named by the schema."""

from __future__ import annotations

from typing import Any

from batcomputer.bundle import Bundle
from batcomputer.errors import IntegrityError

ENCODER_MODULE = "batcomputer.encoding"  # checked by name: importing it here would pull scikit-learn in


def model_input(pipeline: Any, records: list[dict[str, Any]], columns: list[str]) -> Any:
    """What the pipeline's first step reads: the records themselves for the schema encoder (it reads named
    fields from dicts in one pass; a DataFrame of strings costs more to build than the model costs to run),
    a DataFrame for any other pipeline."""
    steps = getattr(pipeline, "steps", None)
    if steps and type(steps[0][1]).__name__ == "SchemaEncoder" and type(steps[0][1]).__module__ == ENCODER_MODULE:
        return records
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=columns)


def score(bundle: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score clean records (every field present, None where imputed) in one predict_proba call.

    Each result maps every output name to its probability and ``label`` to the most likely class.
    """
    if not records:
        return []
    schema = bundle.schema
    probabilities = bundle.pipeline.predict_proba(model_input(bundle.pipeline, records, schema.field_names))
    classes = [int(c) for c in bundle.pipeline.classes_]
    if sorted(classes) != list(range(len(schema.labels))):
        raise IntegrityError(f"{bundle.ref}: the pipeline's classes {classes} do not match the schema's "
                             f"{len(schema.labels)} labels", file="model.joblib")
    columns = [schema.outputs[c] for c in classes]
    labels = [schema.labels[c] for c in classes]
    best = probabilities.argmax(axis=1).tolist()  # the first most likely class, as max() would pick
    if len(columns) == 2:  # the common case: one comprehension, no max() per row
        first, second = columns
        return [{first: a, second: b, "label": labels[i]}
                for a, b, i in zip(probabilities[:, 0].tolist(), probabilities[:, 1].tolist(), best, strict=True)]
    return [{**dict(zip(columns, row, strict=True)), "label": labels[i]}
            for row, i in zip(probabilities.tolist(), best, strict=True)]
