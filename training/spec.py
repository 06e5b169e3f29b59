"""Training specs (training/specs/*.toml): fields, target classes, sources, estimator, holdout and metric."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batcomputer.errors import BadRequest, DataError, NotFound
from batcomputer.models.schema import Field

SPECS = Path(__file__).resolve().parent / "specs"
DERIVES = ("month_of_year", "drop_last_word")
METRICS = {"log_loss": "lower", "brier": "lower", "roc_auc": "higher", "pr_auc": "higher", "accuracy": "higher"}
ESTIMATOR_MODULES = ("sklearn.ensemble", "sklearn.linear_model", "sklearn.tree", "sklearn.neighbors",
                     "sklearn.naive_bayes", "sklearn.svm")


@dataclass(frozen=True)
class Column:
    """How one field derives from a raw column: the column, an optional derivation and value map."""

    column: str
    derive: str | None = None
    map: dict[str, Any] | None = None


@dataclass(frozen=True)
class Source:
    name: str
    dataset: str | None  # a dataset of data/sources.toml, or None for a file given at training time
    columns: dict[str, Column]
    target_column: str
    classes: dict[str, tuple[str, ...]]  # label -> raw values, plus "drop" -> raw values to drop
    drop_missing: bool


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    fields: tuple[Field, ...]
    labels: tuple[str, ...]
    outputs: tuple[str, ...]
    sources: dict[str, Source]
    estimator: str
    estimator_params: dict[str, Any]
    seed: int
    holdout: float
    metric: str
    raw: dict[str, Any]
    margin: float = 0.0     # a challenger must be better than the champion by this much, by the metric, to replace it
    freshness_days: float | None = None  # a champion trained longer ago than this yields to a challenger that
    #                                      is no worse than it by more than the margin (None: never by age)
    min_rows: int = 100     # fewer usable rows than this stop a retraining before it trains
    live_days: float | None = None  # [retrain] live_days: also train on the captured records of this many days
    #                                 whose outcomes came back (None: on the fetched data only)

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.metric] == "lower"

    def pick_source(self, choice: str | None) -> tuple[Source, str | None]:
        """Resolve ``--source``: a source name, a file path or URL (for a file source), or the default."""
        if choice is None:
            with_data = [s for s in self.sources.values() if s.dataset]
            if not with_data:
                raise BadRequest(f"model {self.name!r} trains from a file: give --source PATH "
                                 f"(sources: {', '.join(self.sources)})", field="source")
            return with_data[0], None
        if choice in self.sources:
            chosen = self.sources[choice]
            if chosen.dataset is None:
                raise BadRequest(f"source {choice!r} of {self.name!r} needs a file: give --source PATH",
                                 field="source")
            return chosen, None
        files = [s for s in self.sources.values() if s.dataset is None]
        if not files:
            raise BadRequest(f"model {self.name!r} has no file source; --source must be one of "
                             f"{', '.join(self.sources)}", field="source")
        return files[0], choice


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"{path.name}: {message}")


def _classes(path: Path, raw: dict[str, Any], labels: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    classes = {k: tuple(str(v) for v in values) for k, values in raw.items()}
    unknown = set(classes) - set(labels) - {"drop"}
    if unknown:
        raise _fail(path, f"target classes {sorted(unknown)} are not labels {list(labels)} or 'drop'")
    seen: dict[str, str] = {}
    for label, values in classes.items():
        for value in values:
            if value in seen:
                raise _fail(path, f"raw target value {value!r} is listed under both {seen[value]!r} and {label!r}")
            seen[value] = label
    return classes


def parse_spec(raw: dict[str, Any], path: Path) -> Spec:
    """Check a spec's structure and build it; every mistake names the spec file and the key."""
    try:
        fields = tuple(Field.from_json({"required": True, "nullable": False, **f}) for f in raw["fields"])
        target = raw["target"]
        labels, outputs = tuple(target["labels"]), tuple(target["outputs"])
        sources = {}
        for name, src in raw["sources"].items():
            tgt = {**target, **src.get("target", {})}
            columns = {k: Column(**v) for k, v in src["columns"].items()}
            for field_name, column in columns.items():
                if column.derive and column.derive not in DERIVES:
                    raise _fail(path, f"source {name!r} field {field_name!r}: derive must be one of {DERIVES}")
            missing = [f.name for f in fields if f.name not in columns]
            if missing:
                raise _fail(path, f"source {name!r} does not say where fields {missing} come from")
            sources[name] = Source(name=name, dataset=src.get("dataset"), columns=columns,
                                   target_column=tgt["column"], classes=_classes(path, tgt["classes"], labels),
                                   drop_missing=bool(tgt.get("drop_missing", True)))
        estimator = raw["estimator"]
        spec = Spec(name=raw["name"], description=raw.get("description", ""), fields=fields, labels=labels,
                    outputs=outputs, sources=sources, estimator=estimator["class"],
                    estimator_params=dict(estimator.get("params", {})), seed=int(raw.get("seed", 0)),
                    holdout=float(raw.get("holdout", 0.25)), metric=raw.get("metric", "log_loss"), raw=raw,
                    margin=float(raw.get("margin", 0.0)), min_rows=int(raw.get("min_rows", 100)),
                    freshness_days=float(raw["freshness_days"]) if "freshness_days" in raw else None,
                    live_days=_live_days(path, raw.get("retrain", {})))
    except KeyError as exc:
        raise _fail(path, f"missing key {exc}") from None
    except (TypeError, ValueError) as exc:
        raise _fail(path, str(exc)) from None
    if spec.metric not in METRICS:
        raise _fail(path, f"metric must be one of {sorted(METRICS)}, not {spec.metric!r}")
    if spec.estimator.rsplit(".", 1)[0] not in ESTIMATOR_MODULES:
        raise _fail(path, f"estimator {spec.estimator!r} is not from {ESTIMATOR_MODULES}")
    if spec.margin < 0 or spec.min_rows < 1:
        raise _fail(path, "margin must not be negative and min_rows must be at least 1")
    if spec.freshness_days is not None and spec.freshness_days <= 0:
        raise _fail(path, "freshness_days must be greater than zero")
    monitor = raw.get("monitor", {})
    numbers = isinstance(monitor, dict) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                for v in monitor.values())
    if not numbers or set(monitor) - {"psi_warn", "psi_alert", "quality_margin"} or not (
            0 < monitor.get("psi_warn", 0.1) < monitor.get("psi_alert", 0.25)) or monitor.get("quality_margin", 0) < 0:
        raise _fail(path, "[monitor] takes psi_warn and psi_alert (0 < warn < alert) and quality_margin (not negative)")
    timeouts = raw.get("timeouts", {})
    if not isinstance(timeouts, dict) or set(timeouts) - {"records", "chunk", "stream"} or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in timeouts.values()):
        raise _fail(path, "[timeouts] takes records, chunk and stream, each a number of seconds greater than zero")
    if not 0 < spec.holdout < 1:
        raise _fail(path, f"holdout must be a fraction between 0 and 1, not {spec.holdout}")
    if len(labels) != 2 or len(outputs) != 2:
        raise _fail(path, "target needs exactly two labels and two outputs (binary classification)")
    return spec


def _live_days(path: Any, retrain: Any) -> float | None:
    """``[retrain] live_days``: a number of days greater than zero, or absent."""
    if not isinstance(retrain, dict) or set(retrain) - {"live_days"}:
        raise _fail(path, "[retrain] takes live_days: the days of captured records with outcomes to train on too")
    days = retrain.get("live_days")
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
        raise _fail(path, "[retrain] live_days must be a number of days greater than zero")
    return float(days)


def spec_names() -> list[str]:
    return sorted(p.stem for p in SPECS.glob("*.toml"))


def load_spec(name_or_path: str) -> Spec:
    """Load a spec by model name (training/specs/NAME.toml) or by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SPECS / f"{name_or_path}.toml"
    if not path.exists():
        raise NotFound(f"no training spec {name_or_path!r}; specs: {', '.join(spec_names())}")
    with path.open("rb") as handle:
        return parse_spec(tomllib.load(handle), path)
