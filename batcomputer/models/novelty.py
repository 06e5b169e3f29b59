"""What the training data never or rarely saw: per-record warnings from the bundle's training profile.

A record is scored whatever it holds within the schema, but a value outside what the model learned from
deserves a word: a category that never (or in under ``RARE_SHARE`` of the rows) occurred in the training
split, or a number outside the range the training split held (e.g. the crime model, trained on one month,
asked about another). Bundles without a profile give no warnings.
"""

from __future__ import annotations

from typing import Any

from batcomputer.models.schema import CATEGORICAL, Schema

RARE_SHARE = 0.001  # a category in fewer than 0.1% of the training rows is "rarely seen"
UNSEEN, RARE, OUTSIDE = "unseen", "rare", "outside_training_range"


def _number(value: float) -> str:
    return f"{value:g}"


class Novelty:
    """The checks of one schema's profile, prepared once per bundle."""

    def __init__(self, schema: Schema) -> None:
        self.categories: dict[str, dict[str, float]] = {}
        self.ranges: dict[str, tuple[float, float]] = {}
        for field in schema.fields:
            profile = schema.profile.get(field.name) or {}
            if field.kind == CATEGORICAL and profile.get("frequencies"):
                self.categories[field.name] = {str(k): float(v) for k, v in profile["frequencies"].items()}
            elif field.kind != CATEGORICAL:
                quantiles = profile.get("quantiles") or {}
                if quantiles.get("0.0") is not None and quantiles.get("1.0") is not None:
                    self.ranges[field.name] = (float(quantiles["0.0"]), float(quantiles["1.0"]))

    def check(self, record: dict[str, Any]) -> list[dict[str, str]]:
        """Warnings for one clean record: ``{"field", "code", "message"}`` each; empty when all is familiar."""
        found: list[dict[str, str]] = []
        for name, shares in self.categories.items():
            value = record.get(name)
            if value is None:
                continue
            share = shares.get(str(value), 0.0)
            if share == 0.0:
                found.append({"field": name, "code": UNSEEN,
                              "message": f"{name}={value!r} never occurred in the training data"})
            elif share < RARE_SHARE:
                found.append({"field": name, "code": RARE, "message": f"{name}={value!r} occurred in only "
                                                                      f"{share:.3%} of the training rows"})
        for name, (low, high) in self.ranges.items():
            value = record.get(name)
            if value is None or low <= value <= high:
                continue
            held = f"only {name}={_number(low)}" if low == high else f"{name} from {_number(low)} to {_number(high)}"
            found.append({"field": name, "code": OUTSIDE,
                          "message": f"{name}={_number(value)} is outside the training data, which held {held}"})
        return found


_prepared: dict[str, Novelty] = {}


def novelty_of(schema: Schema, key: str) -> Novelty:
    """The checks of ``schema``, prepared once per ``key`` (a bundle's sha256)."""
    found = _prepared.get(key)
    if found is None:
        found = _prepared[key] = Novelty(schema)
    return found
