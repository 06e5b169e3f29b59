"""The batcomputer command line against a real registry."""

import dataclasses
import json
from pathlib import Path

from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
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


def test_data_sample_writes_records_the_model_takes_with_real_proportions(trained_registry: Settings,
                                                                         tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from batcomputer.files.tables import check_columns

    target = tmp_path / "crimes.parquet"
    done = run_cli(env_for(trained_registry), "data", "sample", "crime", str(target), "--rows", "5000")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(target)
    bundle = Registry.from_settings(trained_registry).bundle("crime", "production")
    assert table.num_rows == 5000 and table.column_names == ["record_id", *bundle.schema.field_names]
    check_columns(bundle.schema, table.schema)  # what a bulk worker checks before scoring a file
    assert table.column("record_id").to_pylist() == list(range(1, 5001))
    crimes = table.column("crime").to_pandas().value_counts(normalize=True)
    assert len(crimes) > 5 and crimes.iloc[0] < 0.5  # drawn from the data, not one repeated row
    scored = run_cli(env_for(trained_registry), "score", "crime", str(target), str(tmp_path / "out.parquet"), "--local")
    assert scored.returncode == 0 and "0 failed" in scored.stdout, scored.stdout + scored.stderr
    titanic = run_cli(env_for(trained_registry), "data", "sample", "titanic", str(tmp_path / "t.csv"), "--rows", "3")
    assert titanic.returncode == 0, titanic.stderr
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "record_id,pclass,sex,age,sibsp,parch"


def test_commands_beside_up_find_its_redis_and_say_so_when_none_runs(redis_base_url: str, tmp_path: Path) -> None:
    from batcomputer.jobqueue.connection import record_address

    env = {k: v for k, v in env_for(Settings(state_dir=str(tmp_path))).items() if k != "BATCOMPUTER_REDIS_URL"}
    missing = run_cli(env, "redis-url")
    assert missing.returncode != 0 and "no `batcomputer up` runs" in missing.stderr, missing.stderr
    record_address(str(tmp_path), redis_base_url)  # what a running `up` leaves in its state folder
    found = run_cli(env, "redis-url")
    assert (found.returncode, found.stdout.strip()) == (0, redis_base_url), found.stderr
    dead = run_cli(env, "jobs", "dead", "--ids")
    assert dead.returncode == 0, dead.stderr
    record_address(str(tmp_path), "redis://127.0.0.1:1/0")  # a stack that died without cleaning up
    stale = run_cli(env, "redis-url")
    assert stale.returncode != 0 and "no `batcomputer up` runs" in stale.stderr
    assert run_cli({**env, "BATCOMPUTER_REDIS_URL": redis_base_url}, "redis-url").stdout.strip() == redis_base_url
