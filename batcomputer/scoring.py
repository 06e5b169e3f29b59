"""Scoring validated records with a loaded bundle: one vectorised call, outputs named by the schema."""

from __future__ import annotations

from typing import Any

from batcomputer.bundle import Bundle
from batcomputer.errors import IntegrityError


def score(bundle: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score clean records (every field present, None where imputed) in one predict_proba call.

    Each result maps every output name to its probability and ``label`` to the most likely class.
    """
    if not records:
        return []
    import pandas as pd

    schema = bundle.schema
    frame = pd.DataFrame.from_records(records, columns=schema.field_names)
    probabilities = bundle.pipeline.predict_proba(frame)
    classes = [int(c) for c in bundle.pipeline.classes_]
    if sorted(classes) != list(range(len(schema.labels))):
        raise IntegrityError(f"{bundle.ref}: the pipeline's classes {classes} do not match the schema's "
                             f"{len(schema.labels)} labels", file="model.joblib")
    columns = [schema.outputs[c] for c in classes]
    labels = [schema.labels[c] for c in classes]
    results = []
    for row in probabilities.tolist():
        result: dict[str, Any] = {name: float(p) for name, p in zip(columns, row, strict=True)}
        result["label"] = labels[max(range(len(row)), key=row.__getitem__)]
        results.append(result)
    return results
