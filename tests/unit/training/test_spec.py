"""A spec's `[retrain] live_days`: absent by default (train on the fetched data only), a number of days when
given, and anything else is refused with the file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcomputer.errors import DataError
from training.spec import SPECS, load_spec


def written(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "titanic-variant.toml"
    path.write_text((SPECS / "titanic.toml").read_text() + extra)
    return str(path)


def test_live_days_is_off_unless_a_spec_asks_for_it(tmp_path: Path) -> None:
    assert load_spec("titanic").live_days is None
    assert load_spec(written(tmp_path, "\n[retrain]\nlive_days = 14\n")).live_days == 14.0


@pytest.mark.parametrize("extra", ["\n[monitor]\npsi_warn = 0.3\npsi_alert = 0.2\n",
                                   "\n[monitor]\nquality_margin = -1\n", "\n[monitor]\npsi = 0.1\n"])
def test_a_bad_monitor_table_is_refused_naming_the_file(tmp_path: Path, extra: str) -> None:
    with pytest.raises(DataError, match=r"titanic-variant\.toml.*\[monitor\]"):
        load_spec(written(tmp_path, extra))


def test_monitor_thresholds_may_be_set_per_model(tmp_path: Path) -> None:
    spec = load_spec(written(tmp_path, "\n[monitor]\npsi_warn = 0.05\npsi_alert = 0.2\nquality_margin = 0.02\n"))
    assert spec.raw["monitor"] == {"psi_warn": 0.05, "psi_alert": 0.2, "quality_margin": 0.02}


@pytest.mark.parametrize("extra", ["\n[retrain]\nlive_days = 0\n", "\n[retrain]\nlive_days = \"a week\"\n",
                                   "\n[retrain]\nlive_days = true\n", "\n[retrain]\ndays = 3\n"])
def test_a_bad_retrain_table_is_refused_naming_the_file(tmp_path: Path, extra: str) -> None:
    with pytest.raises(DataError, match=r"titanic-variant\.toml.*\[retrain\]"):
        load_spec(written(tmp_path, extra))
