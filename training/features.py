"""Turning a raw table into named fields and class indices, as a spec's source says, with a drop report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from batcomputer.errors import DataError
from batcomputer.models.schema import CATEGORICAL, Field
from training.spec import Column, Source, Spec


def _derive(values: pd.Series, how: Column) -> pd.Series:
    if how.derive == "month_of_year":  # "2018-07" -> 7
        values = pd.to_numeric(values.astype("string").str.slice(5, 7), errors="coerce")
    elif how.derive == "drop_last_word":  # "Leeds 111A" -> "Leeds"
        values = values.astype("string").str.rsplit(" ", n=1).str[0]
    if how.map is not None:
        mapping = {str(k): v for k, v in how.map.items()}
        values = values.map(lambda v: mapping.get(str(v), np.nan) if pd.notna(v) else np.nan)
    return values


def _in_domain(values: pd.Series, spec: Field) -> tuple[pd.Series, pd.Series]:
    """Coerce to the field's kind; return the values (NaN when absent) and a mask of out-of-domain values."""
    if spec.kind == CATEGORICAL:
        text = values.astype(object).where(values.notna(), np.nan)
        text = text.map(lambda v: str(v) if isinstance(v, str | int | float) and pd.notna(v) else np.nan)
        bad = text.notna() & ~text.isin(list(spec.categories or ()))
        return text.astype(object), bad
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = values.notna() & numbers.isna()
    if spec.minimum is not None:
        bad |= numbers < spec.minimum
    if spec.maximum is not None:
        bad |= numbers > spec.maximum
    if spec.integer:
        bad |= numbers.notna() & (numbers % 1 != 0)
    return numbers, bad


def map_target(raw: pd.Series, source: Source, labels: tuple[str, ...]) -> tuple[pd.Series, dict[str, Any]]:
    """Map raw outcome names to class indices by the spec's lists (never by position); -1 marks a dropped row."""
    lookup = {value: label for label, values in source.classes.items() for value in values}

    def as_text(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    text = pd.Series([as_text(v) for v in raw.tolist()], index=raw.index, dtype=object)
    missing = text.isna()
    if missing.any() and not source.drop_missing:
        raise DataError(f"{int(missing.sum())} rows have no {source.target_column!r}; set drop_missing")
    unlisted = text[~missing & ~text.isin(list(lookup))].value_counts()
    if len(unlisted):
        listing = ", ".join(f"{value!r} ({count} rows)" for value, count in unlisted.items())
        raise DataError(f"target {source.target_column!r} has values the spec does not list under "
                        f"{', '.join([*labels, 'drop'])}: {listing}")
    index = {label: i for i, label in enumerate(labels)}
    classes = pd.Series([index.get(lookup[v], -1) if v is not None else -1 for v in text.tolist()],
                        index=raw.index, dtype="int64")
    report: dict[str, Any] = {"missing_target": int(missing.sum()),
              "dropped_outcomes": int(((classes == -1) & ~missing).sum())}
    return classes, report


def build_table(spec: Spec, source: Source, raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Derive every field from raw columns, drop rows the spec excludes; return X, y and what was dropped."""
    absent = sorted({c.column for c in source.columns.values()} - set(raw.columns) |
                    ({source.target_column} - set(raw.columns)))
    if absent:
        raise DataError(f"source {source.name!r} lacks column(s) {absent}; it has {list(raw.columns)}")
    classes, report = map_target(raw[source.target_column], source, spec.labels)
    keep = classes >= 0
    columns: dict[str, pd.Series] = {}
    dropped: dict[str, int] = {}
    blanked: dict[str, int] = {}
    for field in spec.fields:
        values, bad = _in_domain(_derive(raw[source.columns[field.name].column], source.columns[field.name]), field)
        if field.required:
            out = keep & (bad | values.isna())
            dropped[field.name] = int(out.sum())
            keep &= ~out
        else:
            blanked[field.name] = int((keep & bad).sum())
            values = values.where(~bad, np.nan)
        columns[field.name] = values
    table = pd.DataFrame(columns)[keep].reset_index(drop=True)
    y = classes[keep].to_numpy()
    report.update(rows_raw=len(raw), rows_used=len(table), dropped_out_of_domain=dropped,
                  optional_blanked_out_of_domain=blanked)
    return table, y, report
