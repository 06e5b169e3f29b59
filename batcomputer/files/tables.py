"""Arrow tables against a model's schema: which columns a file must have, and row validation by column.

Rows of a batch file are checked with the same rules, codes and messages as records sent to the REST API
(``schema.check_value`` words every problem), but a column at a time: a file of a million rows costs a few
vectorised passes, and only rows with a problem are looked at one by one. In a table a field cannot be
absent from one row, so an empty cell (null) of an optional or nullable field is imputed like an absent
one; in a required field it is the ``null`` problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batcomputer.errors import BatcomputerError
from batcomputer.models.schema import CATEGORICAL, Field, Schema, check_value

ERROR_CODE, ERROR_MESSAGE, LABEL = "error_code", "error", "label"


class BadInput(BatcomputerError):
    """A batch file that cannot be scored as a whole: not Parquet, truncated, or without a required column."""

    code = "bad_input"
    status = 422
    title = "Input file cannot be scored"


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_text(kind.value_type)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def check_columns(schema: Schema, columns: pa.Schema) -> None:
    """Refuse a file whose columns cannot be scored: a required field without its column, a field's column
    of the wrong type (a nested one included). Extra columns pass through; a missing optional field is
    imputed."""
    problems = []
    for spec in schema.fields:
        index = columns.get_field_index(spec.name)
        if index < 0:
            if spec.required:
                problems.append({"field": spec.name, "code": "missing",
                                 "message": f"{spec.name}: the file has no column {spec.name!r} "
                                            f"({spec.describe_domain()})"})
            continue
        kind = columns.field(index).type
        fits = pa.types.is_null(kind) or (_is_text(kind) if spec.kind == CATEGORICAL else _is_number(kind))
        if not fits:
            wanted = "text" if spec.kind == CATEGORICAL else "numbers"
            problems.append({"field": spec.name, "code": "type",
                             "message": f"{spec.name}: the column holds {kind}, not {wanted} "
                                        f"({spec.describe_domain()})"})
    if problems:
        raise BadInput("; ".join(p["message"] for p in problems), field=problems[0]["field"], problems=problems)


@dataclass
class Checked:
    """A chunk's rows after validation: which rows are valid, and for the others a code and a message."""

    valid: np.ndarray  # bool per row
    codes: list[str | None]
    messages: list[str | None]

    @property
    def failed(self) -> int:
        return int(len(self.valid) - int(self.valid.sum()))


def _column(table: pa.Table, spec: Field) -> pa.Array | None:
    if spec.name not in table.column_names:
        return None
    column = table.column(spec.name).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def validate_table(schema: Schema, table: pa.Table) -> Checked:
    """Validate every row; ``check_columns`` has passed. Each field is one vectorised check; a row it
    flags is looked at alone, so that its message is the one the REST API would give."""
    rows = table.num_rows
    bad = np.zeros(rows, dtype=bool)
    for spec in schema.fields:
        column = _column(table, spec)
        if column is None or pa.types.is_null(column.type):
            if spec.required and not spec.nullable:
                bad[:] = True  # every cell empty: each row gets its ``null`` problem below
            continue
        missing = column.is_null().to_numpy(zero_copy_only=False)
        flagged = missing.copy() if (spec.required and not spec.nullable) else np.zeros(rows, dtype=bool)
        if spec.kind == CATEGORICAL:
            known = pc.is_in(column, value_set=pa.array(spec.categories or (), pa.string()))
            flagged |= ~known.fill_null(True).to_numpy(zero_copy_only=False) & ~missing  # empty: seen above
        else:
            numbers = column.cast(pa.float64(), safe=False).fill_null(0.0).to_numpy(zero_copy_only=False)
            wrong = ~np.isfinite(numbers)
            if spec.integer:
                wrong |= np.isfinite(numbers) & (numbers != np.floor(numbers))
            with np.errstate(invalid="ignore"):
                if spec.minimum is not None:
                    wrong |= numbers < spec.minimum
                if spec.maximum is not None:
                    wrong |= numbers > spec.maximum
            flagged |= wrong & ~missing
        bad |= flagged
    codes: list[str | None] = [None] * rows
    messages: list[str | None] = [None] * rows
    flagged_rows = np.nonzero(bad)[0]
    if len(flagged_rows):
        picked = table.take(pa.array(flagged_rows))
        for position, row in zip(flagged_rows.tolist(), picked.to_pylist(), strict=True):
            problems = []
            for spec in schema.fields:
                value = row.get(spec.name)
                if value is None and (spec.nullable or not spec.required):
                    continue
                _, problem = check_value(spec, value)
                if problem:
                    problems.append(problem)
            if problems:
                codes[position] = problems[0]["code"]
                messages[position] = "; ".join(p["message"] for p in problems)
            else:
                bad[position] = False  # flagged by a vectorised check that the exact one does not share
    return Checked(~bad, codes, messages)
