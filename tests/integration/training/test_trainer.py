"""Each spec trained end to end on real data, published, reproducible, and scored by name."""

import dataclasses
from pathlib import Path

import pytest

from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.settings import Settings
from training.spec import load_spec, spec_names
from training.trainer import train


@pytest.mark.parametrize(("model", "outputs", "record"), [
    ("crime", ("notCaughtProb", "caughtProb"), {"force": "West Yorkshire Police", "crime": "Burglary",
                                                 "month": 10, "district": None}),
    ("titanic", ("died_proba", "survived_proba"), {"pclass": 3, "sex": "male", "age": 22.0, "sibsp": 1,
                                                   "parch": 0}),
])
def test_trained_models_are_published_with_metrics(trained_registry: Settings, model: str,
                                                   outputs: tuple[str, str], record: dict) -> None:
    registry = Registry.from_settings(trained_registry)
    bundle = registry.bundle(model, "production", pipeline=True)
    assert bundle.schema.outputs == outputs
    metrics = bundle.metrics
    for name in ("accuracy", "roc_auc", "pr_auc", "log_loss", "brier", "class_balance", "rows"):
        assert name in metrics
    assert metrics["log_loss"] < metrics["baseline"]["log_loss"], "the model must beat the class prior"
    assert metrics["roc_auc"] > 0.65
    assert bundle.manifest["timings"]["predict_one_ms"] > 0
    assert bundle.manifest["timings"]["rows_per_second"] > 1000
    assert bundle.manifest["data"]["files"]
    assert set(bundle.schema.profile) == set(bundle.schema.field_names)
    for field in bundle.schema.fields:  # the training data's profile: counts per category, quantiles per number
        entry = bundle.schema.profile[field.name]
        assert entry["rows"] == metrics["rows"]["train"], entry
        if field.kind == "categorical":
            assert set(entry["counts"]) == set(field.categories or ())
            assert sum(entry["counts"].values()) == round(entry["rows"] * (1 - entry["missing"]))
        else:
            assert entry["quantiles"]["0.0"] <= entry["quantiles"]["0.5"] <= entry["quantiles"]["1.0"]
    result = score(bundle, [record])[0]
    assert result[outputs[0]] + result[outputs[1]] == pytest.approx(1.0)
    assert 0 < result[outputs[1]] < 1


def test_crime_metrics_reflect_the_imbalance(trained_registry: Settings) -> None:
    metrics = Registry.from_settings(trained_registry).bundle("crime").metrics
    rate = metrics["class_balance"]["train_positive_rate"]
    assert 0.03 < rate < 0.2
    assert metrics["pr_auc"] > 1.5 * metrics["baseline"]["pr_auc"]
    assert metrics["data"]["missing_target"] > 0 and metrics["data"]["rows_used"] > 50_000


def test_training_twice_publishes_no_second_version(trained_registry: Settings) -> None:
    again = train(trained_registry, "titanic", report=lambda line: None)
    assert (again.published.version, again.published.created) == (1, False)
    assert Registry.from_settings(trained_registry).versions("titanic") == [1]


def test_a_third_model_is_only_a_spec(settings: Settings, titanic_csv: Path) -> None:
    trained = train(settings, "titanic-kaggle", source=str(titanic_csv), promote=True, report=lambda line: None)
    bundle = Registry.from_settings(settings).bundle("titanic-kaggle", "production", pipeline=True)
    assert trained.published.version == 1 and trained.promoted
    assert bundle.schema.field_names == ["pclass", "sex", "age", "sibsp", "parch", "fare", "embarked"]
    assert bundle.manifest["data"]["files"] == {
        "titanic.csv": "4a437fde05fe5264e1701a7387ac6fb75393772ba38bb2c9c566405af5af4bd7"}
    result = score(bundle, [{"pclass": 1, "sex": "female", "age": None, "sibsp": 0, "parch": 0, "fare": None,
                             "embarked": None}])[0]
    assert result["survived_proba"] > 0.5


@pytest.mark.parametrize("name", spec_names())
def test_every_spec_trains_on_real_data(name: str, settings: Settings, data_dir: Path,
                                        request: pytest.FixtureRequest) -> None:
    """A new model is a new spec: each spec in training/specs trains, beats its class prior and is published."""
    spec = load_spec(name)
    source = None
    if not any(s.dataset for s in spec.sources.values()):
        source = str(request.getfixturevalue("titanic_csv"))  # a file source: the seed's Kaggle file
    own = dataclasses.replace(settings, data_dir=str(data_dir))
    trained = train(own, name, source=source, report=lambda line: None)
    assert trained.published.created and trained.published.version == 1
    assert trained.metrics["log_loss"] < trained.metrics["baseline"]["log_loss"]
    bundle = Registry.from_settings(own).bundle(name, 1, pipeline=True)
    assert bundle.schema.outputs == spec.outputs and bundle.manifest["spec"]["name"] == name
