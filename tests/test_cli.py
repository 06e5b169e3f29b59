"""The batcomputer command line against a real registry."""

import dataclasses
import json

from batcomputer.bundle import Draft
from batcomputer.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import env_for, run_cli


def test_predict_prints_named_outputs(trained_registry: Settings) -> None:
    done = run_cli(env_for(trained_registry), "predict", "crime", "force=West Yorkshire Police", "crime=Burglary",
                   "month=10")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert abs(result["caughtProb"] + result["notCaughtProb"] - 1) < 1e-9
    assert result["version"] == 1


def test_predict_with_an_unknown_category_names_the_field_and_allowed_values(trained_registry: Settings) -> None:
    done = run_cli(env_for(trained_registry), "predict", "crime", "force=West Yorkshire Police", "crime=Jaywalking",
                   "month=10")
    assert done.returncode == 2
    assert "crime: 'Jaywalking' is not allowed" in done.stderr
    assert "'Burglary'" in done.stderr and "'Vehicle crime'" in done.stderr
    assert done.stdout == ""


def test_predict_reports_every_problem_and_parses_text_by_kind(trained_registry: Settings) -> None:
    done = run_cli(env_for(trained_registry), "predict", "titanic", "pclass=first", "sex=male", "sibsp=0",
                   "parch=0", "cabin=B5")
    assert done.returncode == 2
    assert "pclass: 'first' is not a number" in done.stderr
    assert "cabin: is not a field" in done.stderr


def test_models_lists_versions_aliases_and_metrics(trained_registry: Settings) -> None:
    done = run_cli(env_for(trained_registry), "models")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["model", "version", "aliases", "log_loss", "roc_auc", "pr_auc", "accuracy"]
    assert [line.split()[:3] for line in lines[2:]] == [["crime", "1", "production"], ["titanic", "1", "production"]]
    shown = json.loads(run_cli(env_for(trained_registry), "models", "show", "titanic@production").stdout)
    assert shown["version"] == 1 and shown["schema"]["outputs"] == ["died_proba", "survived_proba"]
    assert shown["manifest"]["files"]["model.joblib"]


def test_promote_rollback_and_history(settings: Settings, titanic_draft: Draft) -> None:
    registry = Registry.from_settings(settings)
    registry.publish(titanic_draft)
    registry.publish(dataclasses.replace(titanic_draft, metrics={**titanic_draft.metrics, "tag": 2}))
    env = env_for(settings)
    assert run_cli(env, "promote", "titanic", "1").returncode == 0
    done = run_cli(env, "promote", "titanic", "2", "--reason", "better log loss")
    assert done.stdout.strip() == "titanic: production 1 -> 2"
    assert run_cli(env, "rollback", "titanic").stdout.strip() == "titanic: production 2 -> 1 (rollback)"
    history = run_cli(env, "history", "titanic").stdout
    assert "better log loss" in history and "rollback" in history
    missing = run_cli(env, "promote", "titanic", "9")
    assert missing.returncode == 2 and "no version 9" in missing.stderr
    unknown = run_cli(env, "models", "show", "nosuch")
    assert unknown.returncode == 2 and "'nosuch' is not in the registry" in unknown.stderr
