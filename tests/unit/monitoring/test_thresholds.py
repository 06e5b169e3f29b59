"""A version's monitor thresholds come from its spec's [monitor] table (else PSI 0.1 and 0.25, and the spec's
margin), and live quality alerts only when enough outcomes came back and the deciding metric is worse than the
holdout's by more than the margin, in the metric's own direction."""

from __future__ import annotations

from types import SimpleNamespace

from batcomputer.monitoring.monitor import MIN_RECORDS, thresholds_of, worse_than_holdout


def bundle(spec: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(manifest={"spec": spec})


def test_thresholds_default_to_the_usual_psi_limits_and_the_specs_margin() -> None:
    assert thresholds_of(bundle({"metric": "roc_auc", "margin": 0.01})) == {
        "warn": 0.1, "alert": 0.25, "metric": "roc_auc", "quality_margin": 0.01}
    chosen = thresholds_of(bundle({"margin": 0.01, "monitor": {"psi_warn": 0.05, "quality_margin": 0.2}}))
    assert chosen == {"warn": 0.05, "alert": 0.25, "metric": "log_loss", "quality_margin": 0.2}


def test_live_quality_alerts_when_worse_than_the_holdout_by_more_than_the_margin() -> None:
    limits = {"metric": "log_loss", "quality_margin": 0.05}
    enough = {"records": MIN_RECORDS, "holdout": {"log_loss": 0.40, "roc_auc": 0.85}}
    assert worse_than_holdout({**enough, "log_loss": 0.44}, limits) is None  # within the margin
    assert worse_than_holdout({**enough, "log_loss": 0.46}, limits) == {
        "metric": "log_loss", "live": 0.46, "holdout": 0.40, "margin": 0.05}
    assert worse_than_holdout({**enough, "log_loss": 0.30}, limits) is None  # better
    assert worse_than_holdout({**enough, "records": MIN_RECORDS - 1, "log_loss": 0.9}, limits) is None  # too few
    higher = {"metric": "roc_auc", "quality_margin": 0.05}  # higher is better: worse means lower
    assert worse_than_holdout({**enough, "roc_auc": 0.95}, higher) is None
    assert worse_than_holdout({**enough, "roc_auc": 0.70}, higher) is not None
