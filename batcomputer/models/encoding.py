"""The schema encoder inside every fitted pipeline: named raw fields to a numeric matrix, with imputation.

It lives in the core because bundles pickle a reference to it: training fits it, workers unpickle it. It
does in one numpy pass what a ColumnTransformer of imputers and one-hot encoders does in many validated
steps, so that scoring one record costs microseconds here instead of milliseconds. Only workers and
training import it (it needs scikit-learn); the gateway never does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


def _column(frame: Any, name: str) -> list[Any]:
    return list(frame[name]) if hasattr(frame, "columns") else [row[name] for row in frame]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is getattr(np, "nan", None)


class SchemaEncoder(TransformerMixin, BaseEstimator):
    """One-hot categorical fields over the spec's fixed categories, pass numeric fields through.

    ``fields`` is a list of ``(name, kind, categories, required)``. Missing values are imputed with what
    ``fit`` learned (the most frequent category; the median), and each optional numeric field gets a
    missing-indicator column. An unknown category encodes as all zeros (validation refuses those first).
    """

    def __init__(self, fields: list[tuple[str, str, tuple[str, ...] | None, bool]]) -> None:
        self.fields = fields

    def fit(self, frame: Any, y: Any = None) -> SchemaEncoder:
        self.fill_: dict[str, Any] = {}
        for name, kind, categories, _ in self.fields:
            values = [v for v in _column(frame, name) if not _is_missing(v)]
            if kind == "categorical":
                known = [v for v in values if v in set(categories or ())]
                self.fill_[name] = Counter(known).most_common(1)[0][0] if known else (categories or ("",))[0]
            else:
                self.fill_[name] = float(np.median(np.asarray(values, dtype=float))) if values else 0.0
        self.n_features_out_ = sum(len(c or ()) if k == "categorical" else (1 if r else 2)
                                   for _, k, c, r in self.fields)
        return self

    def transform(self, frame: Any) -> np.ndarray:
        if hasattr(frame, "column_names") and hasattr(frame, "num_rows"):
            return self._transform_arrow(frame)
        rows = len(frame)
        encoded = []
        for name, kind, categories, _ in self.fields:
            values = _column(frame, name)
            if kind == "categorical":
                index = {c: i for i, c in enumerate(categories or ())}
                codes = np.fromiter((index.get(v, -2) for v in values), dtype=np.int64, count=rows)
                for row in np.nonzero(codes == -2)[0]:  # missing (imputed) or unknown (all zeros): rare
                    codes[row] = index.get(self.fill_[name], -1) if _is_missing(values[row]) else -1
                encoded.append(codes)
            else:
                encoded.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
        return self._matrix(rows, encoded)

    def _transform_arrow(self, table: Any) -> np.ndarray:
        """The same matrix from a pyarrow Table, a column at a time (a batch file's chunk): categories are
        looked up in C, numbers converted without a Python object per value."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = table.num_rows
        encoded = []
        for name, kind, categories, _ in self.fields:
            column = table.column(name).combine_chunks() if name in table.column_names else pa.nulls(rows)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if kind == "categorical":
                if pa.types.is_null(column.type):
                    codes = np.full(rows, -2, dtype=np.int64)
                else:
                    found = pc.index_in(column, value_set=pa.array(list(categories or ()), pa.string()))
                    codes = found.fill_null(-2).to_numpy(zero_copy_only=False).astype(np.int64)
                    missing = column.is_null().to_numpy(zero_copy_only=False)
                    codes[(codes == -2) & ~missing] = -1  # unknown: all zeros, as in ``transform``
                codes[codes == -2] = {c: i for i, c in enumerate(categories or ())}.get(self.fill_[name], -1)
                encoded.append(codes)
            else:
                encoded.append(np.full(rows, np.nan) if pa.types.is_null(column.type) else
                               column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64))
        return self._matrix(rows, encoded)

    def _matrix(self, rows: int, encoded: list[np.ndarray]) -> np.ndarray:
        """The matrix from each field's category codes (imputed; -1 unknown) or numbers (NaN missing)."""
        out = np.zeros((rows, self.n_features_out_), dtype=np.float64)
        offset = 0
        for (name, kind, categories, required), values in zip(self.fields, encoded, strict=True):
            if kind == "categorical":
                known = values >= 0
                out[np.nonzero(known)[0], offset + values[known]] = 1.0
                offset += len(categories or ())
                continue
            missing = np.isnan(values)
            values[missing] = self.fill_[name]
            out[:, offset] = values
            offset += 1
            if not required:
                out[:, offset] = missing
                offset += 1
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names: list[str] = []
        for name, kind, categories, required in self.fields:
            if kind == "categorical":
                names.extend(f"{name}={c}" for c in categories or ())
            else:
                names.append(name)
                if not required:
                    names.append(f"{name}_missing")
        return np.asarray(names, dtype=object)
