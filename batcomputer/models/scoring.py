"""Scoring validated records with a loaded bundle: one vectorised call, outputs named by the schema."""

from __future__ import annotations

from typing import Any

from batcomputer.errors import IntegrityError
from batcomputer.models.bundle import Bundle
from batcomputer.models.novelty import novelty_of

ENCODER_MODULE = "batcomputer.models.encoding"
FOREST_MODULE, FORESTS = "sklearn.ensemble._forest", ("RandomForestClassifier", "ExtraTreesClassifier")


def predict_proba(pipeline: Any, records: Any, columns: list[str]) -> Any:
    """The pipeline's class probabilities for clean records.

    A pipeline that starts with the schema encoder reads the records themselves (it takes named fields from
    dicts in one pass; a DataFrame of strings costs more to build than the model costs to run), and a
    random forest at its end is summed tree by tree here rather than through joblib, whose dispatch costs
    more per tree than the tree does (the same trees, in the same order, the same float32 input and float64
    sums as scikit-learn's single-job path: equal results, see tests/unit/models/test_scoring.py). Any other pipeline
    gets a DataFrame and its own predict_proba."""
    steps = getattr(pipeline, "steps", None)
    if not (steps and _named(steps[0][1], ENCODER_MODULE, ("SchemaEncoder",))):
        import pandas as pd

        if hasattr(records, "num_rows"):  # a pyarrow Table (a chunk of a batch file)
            return pipeline.predict_proba(records.select([c for c in columns if c in records.column_names])
                                          .to_pandas().reindex(columns=columns))
        return pipeline.predict_proba(pd.DataFrame.from_records(records, columns=columns))
    matrix: Any = records
    for _, step in steps[:-1]:
        matrix = step.transform(matrix)
    final = steps[-1][1]
    if (_named(final, FOREST_MODULE, FORESTS) and final.n_jobs in (None, 1) and final.n_outputs_ == 1
            and getattr(matrix, "ndim", 0) == 2 and matrix.shape[1] == final.n_features_in_):
        return _forest_proba(final, matrix)
    return final.predict_proba(matrix)


def _named(step: Any, module: str, names: tuple[str, ...]) -> bool:
    """Whether ``step`` is exactly one of these classes (by name: importing them here would pull
    scikit-learn into every process that imports the core)."""
    return type(step).__module__ == module and type(step).__name__ in names


def _forest_proba(forest: Any, matrix: Any) -> Any:
    import numpy as np

    rows = np.ascontiguousarray(matrix, dtype=np.float32)  # what the forest's own input check makes of it
    total = np.zeros((rows.shape[0], int(forest.n_classes_)), dtype=np.float64)
    for tree in forest.estimators_:
        total += tree.predict_proba(rows, check_input=False)
    total /= len(forest.estimators_)
    return total


def classes_of(bundle: Bundle) -> tuple[list[str], list[str]]:
    """The output names and labels in the order of the pipeline's probability columns."""
    schema = bundle.schema
    classes = [int(c) for c in bundle.pipeline.classes_]
    if sorted(classes) != list(range(len(schema.labels))):
        raise IntegrityError(f"{bundle.ref}: the pipeline's classes {classes} do not match the schema's "
                             f"{len(schema.labels)} labels", file="model.joblib")
    return [schema.outputs[c] for c in classes], [schema.labels[c] for c in classes]


def score_table(bundle: Bundle, table: Any) -> tuple[dict[str, Any], list[str]]:
    """Score the clean rows of a pyarrow Table: each output's probabilities (a float64 array per name) and
    the most likely label of each row."""
    columns, labels = classes_of(bundle)
    if table.num_rows == 0:
        import numpy as np

        return {name: np.zeros(0) for name in columns}, []
    probabilities = predict_proba(bundle.pipeline, table, bundle.schema.field_names)
    named = {name: probabilities[:, index] for index, name in enumerate(columns)}
    return named, [labels[i] for i in probabilities.argmax(axis=1).tolist()]


def score(bundle: Bundle, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score clean records (every field present, None where imputed) in one predict_proba call.

    Each result maps every output name to its probability, ``label`` to the most likely class and
    ``warnings`` to what the training data never or rarely saw in the record (``batcomputer.models.novelty``).
    """
    if not records:
        return []
    probabilities = predict_proba(bundle.pipeline, records, bundle.schema.field_names)
    columns, labels = classes_of(bundle)
    best = probabilities.argmax(axis=1).tolist()  # the first most likely class, as max() would pick
    check = novelty_of(bundle.schema, bundle.sha256).check
    if len(columns) == 2:  # the common case: one comprehension, no max() per row
        first, second = columns
        return [{first: a, second: b, "label": labels[i], "warnings": check(record)}
                for a, b, i, record in zip(probabilities[:, 0].tolist(), probabilities[:, 1].tolist(), best, records,
                                           strict=True)]
    return [{**dict(zip(columns, row, strict=True)), "label": labels[i], "warnings": check(record)}
            for row, i, record in zip(probabilities.tolist(), best, records, strict=True)]
