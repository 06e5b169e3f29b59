"""Drift against a version's training profile: population stability index per field (of new training data or
of captured traffic).

PSI = sum over buckets of (new share - old share) * ln(new share / old share). Categorical fields bucket by
category (and missing); numeric fields by the champion's own quantile bins (``histogram`` in its profile).
Read it the usual way: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from batcomputer.models.schema import CATEGORICAL, Schema

FLOOR = 1e-4  # an empty bucket on one side would make the index infinite
MODERATE, MAJOR = 0.1, 0.25


@dataclass(frozen=True)
class Drift:
    field: str
    psi: float | None  # None: the champion's profile cannot say (an older bundle without bins)
    note: str

    @property
    def level(self) -> str:
        if self.psi is None:
            return "unknown"
        return "major" if self.psi > MAJOR else "moderate" if self.psi > MODERATE else "stable"


def psi(old: list[float], new: list[float]) -> float:
    total = 0.0
    for expected, actual in zip(old, new, strict=True):
        e, a = max(expected, FLOOR), max(actual, FLOOR)
        total += (a - e) * math.log(a / e)
    return round(total, 6)


def field_drift(schema: Schema, frame: Any) -> list[Drift]:
    """The PSI of each of the champion's fields in ``frame`` (a DataFrame of the new training rows)."""
    found = []
    rows = max(len(frame), 1)
    for field in schema.fields:
        entry = schema.profile.get(field.name) or {}
        if field.name not in frame.columns:
            found.append(Drift(field.name, None, "the new data has no such field"))
            continue
        column = frame[field.name]
        missing_new = float(column.isna().sum()) / rows
        missing_old = float(entry.get("missing", 0.0))
        if field.kind == CATEGORICAL:
            frequencies = entry.get("frequencies")
            if not frequencies:
                found.append(Drift(field.name, None, "no category frequencies in the champion's profile"))
                continue
            counts = column.value_counts()
            categories = list(frequencies)
            # the champion's shares are of its non-missing rows' categories among all rows
            old = [float(frequencies[c]) * (1 - missing_old) for c in categories] + [missing_old]
            new = [float(counts.get(c, 0)) / rows for c in categories] + [missing_new]
            unseen = sorted(set(map(str, counts.index)) - set(categories))
            note = f"values the champion never saw: {', '.join(unseen[:5])}" if unseen else ""
            found.append(Drift(field.name, psi(old, new), note))
            continue
        bins = entry.get("histogram") or {}
        if not bins.get("edges"):
            found.append(Drift(field.name, None, "no histogram in the champion's profile (trained before drift "
                                                 "checks)"))
            continue
        values = column.dropna().to_numpy(dtype=float)
        edges = np.asarray(bins["edges"], dtype=float)
        counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
        kept = 1 - missing_old
        old = [float(share) * kept for share in bins["shares"]] + [missing_old]
        new = [float(c) / rows for c in counts] + [missing_new]
        found.append(Drift(field.name, psi(old, new), ""))
    return found
