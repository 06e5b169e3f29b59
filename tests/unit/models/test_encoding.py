"""The schema encoder inside every pipeline: one-hot over fixed categories, imputation, missing indicators."""

import numpy as np
import pandas as pd

from batcomputer.models.encoding import SchemaEncoder

FIELDS = [("crime", "categorical", ("Burglary", "Drugs", "Robbery"), True),
          ("district", "categorical", ("Leeds", "Bradford"), False),
          ("month", "numeric", None, True),
          ("age", "numeric", None, False)]
TRAIN = pd.DataFrame({"crime": ["Drugs", "Drugs", "Robbery"], "district": ["Leeds", None, "Leeds"],
                      "month": [1.0, 7.0, 9.0], "age": [20.0, np.nan, 40.0]})


def test_encodes_one_hot_and_numbers_in_field_order() -> None:
    encoder = SchemaEncoder(FIELDS).fit(TRAIN)
    out = encoder.transform(pd.DataFrame({"crime": ["Burglary"], "district": ["Bradford"], "month": [10],
                                          "age": [30.0]}))
    assert out.tolist() == [[1, 0, 0, 0, 1, 10, 30, 0]]
    assert list(encoder.get_feature_names_out()) == [
        "crime=Burglary", "crime=Drugs", "crime=Robbery", "district=Leeds", "district=Bradford", "month", "age",
        "age_missing"]


def test_missing_values_are_imputed_from_training() -> None:
    encoder = SchemaEncoder(FIELDS).fit(TRAIN)
    out = encoder.transform([{"crime": "Robbery", "district": None, "month": 3, "age": None}])
    # district -> the most frequent known category (Leeds); age -> the training median (30) and flagged missing
    assert out.tolist() == [[0, 0, 1, 1, 0, 3, 30, 1]]


def test_an_unknown_category_encodes_as_zeros_and_batches_match_single_rows() -> None:
    encoder = SchemaEncoder(FIELDS).fit(TRAIN)
    rows = [{"crime": "Arson", "district": "Leeds", "month": 1, "age": 5.0},
            {"crime": "Drugs", "district": "Wakefield", "month": 2, "age": 6.0}]
    together = encoder.transform(pd.DataFrame(rows))
    assert together[0, :3].tolist() == [0, 0, 0] and together[1, 3:5].tolist() == [0, 0]
    assert np.array_equal(together, np.vstack([encoder.transform([r]) for r in rows]))
