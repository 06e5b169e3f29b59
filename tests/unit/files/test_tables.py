"""Rows of a file checked a column at a time give the REST API's codes and messages, row by row."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batcomputer.files.tables import BadInput, check_columns, validate_table
from batcomputer.models.schema import Field, Schema, validate_record

SCHEMA = Schema("m", (Field("colour", "categorical", categories=("red", "blue")),
                      Field("size", "numeric", minimum=0, maximum=10, integer=True),
                      Field("weight", "numeric", required=False, minimum=0.5),
                      Field("shade", "categorical", required=False, nullable=True, categories=("dark", "light"))),
                outputs=("noProb", "yesProb"), labels=("no", "yes"))


def test_each_row_gets_the_code_and_message_the_rest_api_gives() -> None:
    rows = [{"colour": "red", "size": 3, "weight": 1.0, "shade": "dark"},     # fine
            {"colour": "green", "size": 3, "weight": None, "shade": None},    # unknown category; empty optionals
            {"colour": "blue", "size": 11, "weight": 2.0, "shade": "dark"},   # out of range
            {"colour": None, "size": 2, "weight": 1.0, "shade": "light"},     # a required cell empty
            {"colour": "red", "size": 2, "weight": float("nan"), "shade": "pink"},  # two problems
            {"colour": "blue", "size": 0, "weight": 0.5, "shade": None}]      # fine, at the bounds
    table = pa.Table.from_pylist(rows, schema=pa.schema([("colour", pa.string()), ("size", pa.int64()),
                                                         ("weight", pa.float64()), ("shade", pa.string())]))
    checked = validate_table(SCHEMA, table)
    assert checked.valid.tolist() == [True, False, False, False, False, True]
    assert checked.failed == 4
    assert checked.codes == [None, "category", "range", "null", "not_finite", None]
    for index, row in enumerate(rows):
        present = {k: v for k, v in row.items() if v is not None or SCHEMA.field(k).required}
        _, problems = validate_record(SCHEMA, present)
        assert checked.codes[index] == (problems[0]["code"] if problems else None)
        assert checked.messages[index] == ("; ".join(p["message"] for p in problems) if problems else None)


def test_whole_numbers_and_wrong_columns() -> None:
    table = pa.table({"colour": ["red", "red"], "size": [2.5, 2.0]})
    assert validate_table(SCHEMA, table).codes == ["type", None]
    with pytest.raises(BadInput) as missing:
        check_columns(SCHEMA, pa.schema([("size", pa.int64())]))
    assert missing.value.extra["field"] == "colour" and "no column 'colour'" in missing.value.detail
    with pytest.raises(BadInput) as mistyped:
        check_columns(SCHEMA, pa.schema([("colour", pa.int64()), ("size", pa.string())]))
    assert [p["field"] for p in mistyped.value.extra["problems"]] == ["colour", "size"]
    with pytest.raises(BadInput):
        check_columns(SCHEMA, pa.schema([("colour", pa.list_(pa.string())), ("size", pa.int64())]))
    check_columns(SCHEMA, pa.schema([("colour", pa.dictionary(pa.int32(), pa.string())), ("size", pa.int8()),
                                     ("extra", pa.struct([("a", pa.int64())]))]))  # extra columns pass
