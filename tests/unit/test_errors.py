"""Every error carries a stable code and its HTTP status, and renders as problem details."""

from batcomputer.errors import (
    BadRequest,
    BatcomputerError,
    Conflict,
    IntegrityError,
    ModelNotFound,
    Unavailable,
    ValidationFailed,
)


def test_statuses_and_codes_are_stable() -> None:
    assert (BadRequest("x").status, BadRequest.code) == (400, "bad_request")
    assert (ModelNotFound("x").status, ModelNotFound.code) == (404, "model_not_found")
    assert (Conflict("x").status, ValidationFailed([]).status) == (409, 422)
    assert (IntegrityError("x").status, Unavailable("x").status) == (500, 503)
    assert all(issubclass(e, BatcomputerError) for e in (BadRequest, Conflict, IntegrityError, Unavailable))


def test_problem_details_carry_type_status_and_problems() -> None:
    problems = [{"field": "month", "code": "range", "message": "month: 13 is out of range"}]
    body = ValidationFailed(problems).to_problem(instance="/api/models/crime/jobs")
    assert body["type"].endswith("/validation")
    assert body["status"] == 422
    assert body["problems"] == problems
    assert body["instance"] == "/api/models/crime/jobs"
    assert "month" in body["detail"]
