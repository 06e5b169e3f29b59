"""Validation: every problem code, all problems at once, text parsing by kind, schema round trip."""

import math

import pytest

from batcomputer.errors import BadRequest, ValidationFailed
from batcomputer.models.schema import Field, Schema, parse_text_record, require_valid, validate_record, validate_records

SCHEMA = Schema(
    model="crime",
    fields=(
        Field("force", "categorical", categories=("West Yorkshire Police", "Merseyside Police")),
        Field("crime", "categorical", categories=("Burglary", "Robbery")),
        Field("month", "numeric", minimum=1, maximum=12, integer=True),
        Field("district", "categorical", required=False, nullable=True, categories=("Leeds", "Bradford")),
        Field("age", "numeric", required=False, nullable=True, minimum=0, maximum=100),
    ),
    outputs=("notCaughtProb", "caughtProb"),
    labels=("notCaught", "caught"),
)
GOOD = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}


def codes(problems: list[dict]) -> dict[str, str]:
    return {p["field"]: p["code"] for p in problems}


def test_a_valid_record_is_cleaned_and_optional_fields_are_imputed() -> None:
    clean, problems = validate_record(SCHEMA, GOOD)
    assert problems == []
    assert clean == {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10, "district": None,
                     "age": None}
    assert list(clean) == SCHEMA.field_names


def test_every_problem_is_reported_at_once_one_per_field() -> None:
    record = {"crime": "Jaywalking", "month": 13, "district": 7, "age": math.inf, "colour": "red"}
    _, problems = validate_record(SCHEMA, record)
    assert codes(problems) == {"force": "missing", "crime": "category", "month": "range", "district": "type",
                               "age": "not_finite", "colour": "unknown_field"}
    category = next(p for p in problems if p["code"] == "category")
    assert category["allowed"] == ["Burglary", "Robbery"]
    assert "crime" in category["message"] and "Robbery" in category["message"]


@pytest.mark.parametrize(("change", "field", "code"), [
    ({"month": "10"}, "month", "type"),          # a JSON string is not a number
    ({"month": True}, "month", "type"),          # nor is a boolean
    ({"month": 7.5}, "month", "type"),           # a whole number is required
    ({"month": 0}, "month", "range"),
    ({"month": float("nan")}, "month", "not_finite"),
    ({"month": None}, "month", "null"),          # required fields are not nullable
    ({"crime": 3}, "crime", "type"),
    ({"crime": "burglary"}, "crime", "category"),  # categories are exact
    ({"extra": 1}, "extra", "unknown_field"),
])
def test_each_code(change: dict, field: str, code: str) -> None:
    _, problems = validate_record(SCHEMA, {**GOOD, **change})
    assert codes(problems) == {field: code}


def test_missing_required_field() -> None:
    _, problems = validate_record(SCHEMA, {"force": "West Yorkshire Police", "month": 1})
    assert codes(problems) == {"crime": "missing"}


def test_null_is_allowed_where_the_schema_says_so() -> None:
    clean, problems = validate_record(SCHEMA, {**GOOD, "district": None})
    assert problems == [] and clean["district"] is None


def test_require_valid_raises_with_every_problem() -> None:
    with pytest.raises(ValidationFailed) as caught:
        require_valid(SCHEMA, {"month": "x"})
    assert {p["field"] for p in caught.value.problems} == {"force", "crime", "month"}
    assert caught.value.status == 422


def test_a_record_must_be_an_object() -> None:
    with pytest.raises(BadRequest):
        validate_record(SCHEMA, ["West Yorkshire Police"])


def test_many_records_report_their_index() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_records(SCHEMA, [GOOD, {**GOOD, "month": 99}, "nope"])
    assert [(p["record"], p["code"]) for p in caught.value.problems] == [(1, "range"), (2, "type")]


def test_text_values_are_parsed_by_kind() -> None:
    clean, problems = parse_text_record(SCHEMA, {"force": "West Yorkshire Police", "crime": "Robbery",
                                                 "month": "10", "age": "", "district": "Leeds"})
    assert problems == []
    assert clean["month"] == 10 and clean["age"] is None and clean["district"] == "Leeds"
    _, problems = parse_text_record(SCHEMA, {"force": "West Yorkshire Police", "crime": "Robbery", "month": "ten"})
    assert codes(problems) == {"month": "type"}
    _, problems = parse_text_record(SCHEMA, {**{k: str(v) for k, v in GOOD.items()}, "month": "nan"})
    assert codes(problems) == {"month": "not_finite"}


def test_schema_round_trips_through_json() -> None:
    assert Schema.from_json(SCHEMA.to_json()) == SCHEMA
    assert SCHEMA.to_json()["fields"][2] == {"name": "month", "kind": "numeric", "required": True, "nullable": False,
                                             "description": "", "minimum": 1, "maximum": 12, "integer": True}


def test_a_bad_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="categories"):
        Field("x", "categorical")
    with pytest.raises(ValueError, match="kind"):
        Field("x", "text")


@pytest.mark.parametrize("record", [
    GOOD, {**GOOD, "district": None}, {**GOOD, "district": "Leeds", "age": 3}, {**GOOD, "age": 42.5},
    {**GOOD, "month": 10.0}, {**GOOD, "month": 10.5}, {**GOOD, "month": True}, {**GOOD, "month": "10"},
    {**GOOD, "month": 0}, {**GOOD, "month": 13}, {**GOOD, "age": math.nan}, {**GOOD, "age": -math.inf},
    {**GOOD, "age": 10**400}, {**GOOD, "age": -(10**400)}, {**GOOD, "force": None}, {**GOOD, "crime": 7},
    {**GOOD, "colour": "red"}, {"crime": "Burglary", "month": 1}, {**GOOD, "district": "Paris"},
])
def test_a_list_is_validated_as_each_of_its_records(record: dict) -> None:
    clean, problems = validate_record(SCHEMA, record)
    if problems:
        with pytest.raises(ValidationFailed):
            validate_records(SCHEMA, [record])
    else:
        assert validate_records(SCHEMA, [record]) == [clean]


EDGE = [
    GOOD, {**GOOD, "district": None}, {**GOOD, "district": "Leeds", "age": 3}, {**GOOD, "age": 42.5},
    {**GOOD, "month": 10.0}, {**GOOD, "month": 10.5}, {**GOOD, "month": True}, {**GOOD, "month": "10"},
    {**GOOD, "month": 0}, {**GOOD, "month": 13}, {**GOOD, "age": -1}, {**GOOD, "age": 100}, {**GOOD, "force": None},
    {**GOOD, "crime": 7}, {**GOOD, "colour": "red"}, {"crime": "Burglary", "month": 1}, {**GOOD, "district": "Paris"},
    {**GOOD, "age": 10**30}, [GOOD], "text", 7,
]


@pytest.mark.parametrize("record", EDGE)
def test_the_one_pass_decoder_accepts_only_what_validation_accepts_and_cleans_it_alike(record: object) -> None:
    import json

    from batcomputer.models.schema import clean_json

    raw = json.dumps(record).encode()
    fast = clean_json(SCHEMA, raw)
    try:
        clean = validate_records(SCHEMA, [record])
    except ValidationFailed:
        assert fast is None
        return
    except BadRequest:
        assert fast is None
        return
    if fast is not None:  # the decoder may leave a valid record to the detailed path (e.g. month 10.0)
        assert (json.loads(fast[0]), fast[1]) == (clean, 1)
        assert [type(v) for v in json.loads(fast[0])[0].values()] == [type(v) for v in clean[0].values()]


def test_the_one_pass_decoder_takes_lists_and_leaves_any_invalid_list_to_the_detailed_path() -> None:
    import json

    from batcomputer.models.schema import clean_json

    records = [GOOD, {**GOOD, "age": 7}, {**GOOD, "district": "Bradford"}]
    payload, count = clean_json(SCHEMA, json.dumps({"records": records}).encode()) or (b"", 0)
    assert count == 3 and json.loads(payload) == validate_records(SCHEMA, records)
    assert clean_json(SCHEMA, json.dumps({"records": [*records, {**GOOD, "month": 13}]}).encode()) is None
    assert clean_json(SCHEMA, json.dumps({"records": []}).encode()) is None
    assert clean_json(SCHEMA, b'{"records": [') is None
    assert clean_json(SCHEMA, json.dumps({"records": records, "more": 1}).encode()) is None


def test_the_one_pass_decoder_takes_field_names_that_are_not_identifiers() -> None:
    import json

    from batcomputer.models.schema import clean_json

    odd = Schema(model="odd", fields=(Field("Sex Code", "categorical", categories=("f", "m")),
                                      Field("class", "numeric", required=False, nullable=True, minimum=1, maximum=3)),
                 outputs=("died", "lived"), labels=("died", "lived"))
    payload, count = clean_json(odd, b'{"Sex Code": "f", "class": 2}') or (b"", 0)
    assert (json.loads(payload), count) == ([{"Sex Code": "f", "class": 2.0}], 1)
    assert clean_json(odd, b'{"f0": "f"}') is None  # the internal attribute names are not accepted


@pytest.mark.parametrize("field", [Field("n", "numeric", integer=True),
                                   Field("n", "numeric", integer=True, minimum=0.5, maximum=3.5),
                                   Field("n", "numeric", integer=True, minimum=1.0, maximum=12.0),
                                   Field("n", "numeric", minimum=1, maximum=3), Field("n", "numeric")],
                         ids=["whole, unbounded", "whole, fractional bounds", "whole, float bounds", "real, int bounds",
                              "real, unbounded"])
@pytest.mark.parametrize("text", ["0", "1", "2", "3", "4", "12", "13", "99999999999999999999999", "2.5", "1e400"])
def test_the_one_pass_decoder_agrees_on_numeric_bounds_of_every_kind(field: Field, text: str) -> None:
    import json

    from batcomputer.models.schema import clean_json

    schema = Schema(model="n", fields=(field,), outputs=("no", "yes"), labels=("no", "yes"))
    raw = f'{{"n": {text}}}'.encode()
    fast = clean_json(schema, raw)
    try:
        clean = validate_records(schema, [json.loads(raw)])
    except ValidationFailed:
        assert fast is None
        return
    if fast is not None:
        assert json.loads(fast[0]) == clean


def test_a_422_is_never_larger_than_the_request_that_caused_it() -> None:
    """A body of thousands of bad records with long values got a 56.8 MB answer from a 2.3 MB request (issue 30)."""
    import orjson

    long = "x" * 400
    records = [{"force": long, "crime": "Burglary", "month": 1, f"typo_{long}": 1} for _ in range(5_000)]
    with pytest.raises(ValidationFailed) as failed:
        validate_records(SCHEMA, records)
    error = failed.value
    answer = orjson.dumps({"detail": error.detail, **error.extra})
    assert len(answer) < len(orjson.dumps(records)) / 20
    assert len(error.problems) == 10_000 and error.extra["problems_total"] == 10_000
    assert len(error.extra["problems"]) == 100 and error.detail.endswith("; and 9990 more problem(s)")
    messages = " ".join(p["message"] for p in error.extra["problems"][:2])
    assert "... (407 characters)" in messages and "... (402 characters)" in messages  # cut, their lengths said
