"""A model's input and output schema (``schema.json``) and the validation every entry point shares."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, Optional

from batcomputer.errors import BadRequest, ValidationFailed

CATEGORICAL = "categorical"
NUMERIC = "numeric"
KINDS = (CATEGORICAL, NUMERIC)
PROBLEM_CODES = ("missing", "unknown_field", "type", "category", "range", "not_finite", "null")


@dataclass(frozen=True)
class Field:
    """One named input: categorical (with its categories) or numeric (with its allowed range)."""

    name: str
    kind: str
    required: bool = True
    nullable: bool = False
    description: str = ""
    categories: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == CATEGORICAL and not self.categories:
            raise ValueError(f"field {self.name!r}: a categorical field needs its categories")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"field {self.name!r}: minimum {self.minimum} is above maximum {self.maximum}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.kind == CATEGORICAL:
            for key in ("minimum", "maximum", "integer"):
                data.pop(key)
            data["categories"] = list(self.categories or ())
        else:
            data.pop("categories")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Field:
        values = dict(data)
        if values.get("categories") is not None:
            values["categories"] = tuple(values["categories"])
        return cls(**values)

    def describe_domain(self) -> str:
        if self.kind == CATEGORICAL:
            return "one of " + ", ".join(repr(c) for c in self.categories or ())
        low = "-inf" if self.minimum is None else _number_text(self.minimum)
        high = "inf" if self.maximum is None else _number_text(self.maximum)
        return f"{'a whole number' if self.integer else 'a number'} in [{low}, {high}]"


@dataclass(frozen=True)
class Schema:
    """The fields a model takes (in order), the outputs it gives (in class order) and its training profile."""

    model: str
    fields: tuple[Field, ...]
    outputs: tuple[str, ...]
    labels: tuple[str, ...]
    profile: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {self.model!r}: duplicate field names in {names}")
        if len(self.outputs) != len(self.labels):
            raise ValueError(f"schema {self.model!r}: {len(self.outputs)} outputs but {len(self.labels)} labels")

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @cached_property
    def json_decoders(self) -> tuple[Any, Any]:
        """Decoders of one record and of ``{"records": [...]}`` that parse and validate in one pass in C and
        accept only plainly valid input (see ``clean_json``), built once per schema."""
        return _json_decoders(self)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fields": [f.to_json() for f in self.fields],
            "outputs": list(self.outputs),
            "labels": list(self.labels),
            "profile": self.profile,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        return cls(
            model=data["model"],
            fields=tuple(Field.from_json(f) for f in data["fields"]),
            outputs=tuple(data["outputs"]),
            labels=tuple(data["labels"]),
            profile=dict(data.get("profile", {})),
        )


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


MAX_ECHO = 80  # characters of a client's value a problem repeats: an error is never larger than the request


def echo(value: Any) -> str:
    """``repr(value)``, cut to ``MAX_ECHO`` characters (saying how long it was)."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text)} characters)"


def _problem(field_name: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"field": field_name, "code": code, "message": f"{field_name}: {message}", **extra}


def check_value(spec: Field, value: Any) -> tuple[Any, dict[str, Any] | None]:
    """Check one present value against its field; return (clean value, problem or None)."""
    if value is None:
        if spec.nullable:
            return None, None
        return None, _problem(spec.name, "null", "must not be null")
    if spec.kind == CATEGORICAL:
        if not isinstance(value, str):
            return None, _problem(spec.name, "type", f"must be a string ({spec.describe_domain()}), "
                                  f"got {type(value).__name__}")
        if value not in (spec.categories or ()):
            return None, _problem(spec.name, "category", f"{echo(value)} is not allowed; expected "
                                  f"{spec.describe_domain()}", allowed=list(spec.categories or ()))
        return value, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, _problem(spec.name, "type", f"must be a JSON number, got {type(value).__name__} {echo(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float: no model can take it
        return None, _problem(spec.name, "range", f"an integer of {int(value).bit_length()} bits is out of range; "
                              f"expected {spec.describe_domain()}", minimum=spec.minimum, maximum=spec.maximum)
    if not finite:
        return None, _problem(spec.name, "not_finite", f"must be a finite number, got {echo(value)}")
    if spec.integer and not float(value).is_integer():
        return None, _problem(spec.name, "type", f"must be a whole number, got {echo(value)}")
    low, high = spec.minimum, spec.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        return None, _problem(spec.name, "range", f"{echo(value)} is out of range; expected {spec.describe_domain()}",
                              minimum=low, maximum=high)
    return (int(value) if spec.integer else float(value)), None


FLOAT_MAX = 1.7976931348623157e308  # the bounds of an unbounded numeric field: they refuse infinity


def _json_decoders(schema: Schema) -> tuple[Any, Any]:
    import msgspec

    fields: list[tuple[str, Any, Any]] = []
    for f in schema.fields:
        kind: Any
        if f.kind == CATEGORICAL:
            kind = Literal[tuple(f.categories or ())]
        elif f.integer:  # whole-number bounds (a bound of 1.5 admits 2); none: any 64-bit integer
            ge = math.ceil(f.minimum) if f.minimum is not None else None
            le = math.floor(f.maximum) if f.maximum is not None else None
            kind = Annotated[int, msgspec.Meta(ge=ge, le=le)]
        else:
            low = -FLOAT_MAX if f.minimum is None else float(f.minimum)
            high = FLOAT_MAX if f.maximum is None else float(f.maximum)
            kind = Annotated[float, msgspec.Meta(ge=low, le=high)]
        if f.nullable:
            kind = Optional[kind]  # noqa: UP045 (a type built at run time)
        fields.append((f"f{len(fields)}", kind, msgspec.NODEFAULT if f.required else None))
    # Attributes are f0, f1, ...: a field's JSON name need not be a Python identifier.
    names = {f"f{index}": f.name for index, f in enumerate(schema.fields)}
    record = msgspec.defstruct("Record", fields, kw_only=True, forbid_unknown_fields=True, rename=names)
    body = msgspec.defstruct("Body", [("records", list[record])], forbid_unknown_fields=True)  # type: ignore[valid-type]
    return msgspec.json.Decoder(record), msgspec.json.Decoder(body)


def clean_json(schema: Schema, raw: bytes) -> tuple[bytes, int] | None:
    """A request body's clean records as JSON (every field, in schema order, None where imputed) and their
    count, when the body is one plainly valid record or ``{"records": [...]}`` of them; None otherwise, and
    the detailed validation says what is wrong. One pass in C: no Python object per value."""
    import msgspec

    try:
        one, many = schema.json_decoders
    except Exception:  # a schema these types cannot express: every body takes the detailed path
        return None
    try:
        if b'"records"' in raw:
            try:
                records = many.decode(raw).records
            except msgspec.ValidationError:
                records = [one.decode(raw)]
        else:
            records = [one.decode(raw)]
    except Exception:  # anything it refuses (bad JSON, bad UTF-8, a bad value): the detailed path says why
        return None
    if not records:
        return None
    return msgspec.json.encode(records), len(records)


def decode_one(schema: Schema, raw: str | bytes) -> dict[str, Any] | None:
    """One plainly valid record's clean values (every field, None where imputed), decoded and checked in one
    pass; None for anything else (the detailed validation says why)."""
    try:
        one, _ = schema.json_decoders
        decoded = one.decode(raw)
    except Exception:
        return None
    return {f.name: getattr(decoded, f"f{index}") for index, f in enumerate(schema.fields)}


def validate_record(schema: Schema, record: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate one record; return its clean values (every field, None where imputed) and every problem."""
    if not isinstance(record, Mapping):
        raise BadRequest(f"a record must be a JSON object of named fields, got {type(record).__name__}")
    problems: list[dict[str, Any]] = []
    known = set(schema.field_names)
    for name in record:
        if name not in known:
            shown = str(name) if len(str(name)) <= MAX_ECHO else echo(str(name))
            problems.append(_problem(shown, "unknown_field", f"is not a field of model {schema.model!r}; "
                                     f"fields are {', '.join(schema.field_names)}"))
    clean: dict[str, Any] = {}
    for spec in schema.fields:
        if spec.name not in record:
            clean[spec.name] = None
            if spec.required:
                problems.append(_problem(spec.name, "missing", f"is required ({spec.describe_domain()})"))
            continue
        value, problem = check_value(spec, record[spec.name])
        if problem:
            problems.append(problem)
        clean[spec.name] = value
    return clean, problems


def require_valid(schema: Schema, record: Any) -> dict[str, Any]:
    """Validate one record and raise ``ValidationFailed`` listing every problem, or return its clean values."""
    clean, problems = validate_record(schema, record)
    if problems:
        raise ValidationFailed(problems)
    return clean


def validate_records(schema: Schema, records: Iterable[Any]) -> list[dict[str, Any]]:
    """Validate many records; raise one ``ValidationFailed`` whose problems carry their record index."""
    cleaned: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            problems.append({"record": index, "field": None, "code": "type",
                             "message": f"record {index}: must be a JSON object of named fields"})
            cleaned.append({})
            continue
        clean, found = validate_record(schema, record)
        problems.extend({"record": index, **p} for p in found)
        cleaned.append(clean)
    if problems:
        raise ValidationFailed(problems)
    return cleaned


def parse_text(spec: Field, text: str) -> tuple[Any, dict[str, Any] | None]:
    """Parse a value written as text (CLI argument, CSV cell) by its field's kind, ready for validation."""
    if text == "":
        return None, None
    if spec.kind == CATEGORICAL:
        return text, None
    try:
        number: float = int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    except ValueError:
        return None, _problem(spec.name, "type", f"{echo(text)} is not a number ({spec.describe_domain()})")
    return number, None


def parse_text_record(schema: Schema, texts: Mapping[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Parse a record of text values by field kind (empty optional = absent), then validate it."""
    parsed: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for name, text in texts.items():
        spec = next((f for f in schema.fields if f.name == name), None)
        if spec is None:
            parsed[name] = text
            continue
        value, problem = parse_text(spec, text)
        if problem:
            problems.append(problem)
        elif value is not None or spec.required:
            parsed[name] = value
    unparsable = {p["field"] for p in problems}
    clean, found = validate_record(schema, parsed)
    problems.extend(p for p in found if p["field"] not in unparsable)
    return clean, problems
