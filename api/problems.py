"""Every error the gateway answers with, as RFC 9457 problem details (never an HTML page, never a bare 500)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from batcomputer.errors import BatcomputerError, BodyTooLarge, TooManyRequests, Unavailable

log = logging.getLogger("batcomputer.api")
PROBLEM_TYPE = "application/problem+json"


def problem_response(error: BatcomputerError) -> Response:
    body = error.to_problem(instance=request.path)
    response = jsonify(body)
    response.status_code = error.status
    response.mimetype = PROBLEM_TYPE
    if isinstance(error, Unavailable | TooManyRequests):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


class HttpProblem(BatcomputerError):
    """A framework-level error (unknown route, wrong method, body too large) in the same shape."""

    code = "http"

    def __init__(self, status: int, title: str, detail: str, code: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.status = status  # type: ignore[misc]
        self.title = title  # type: ignore[misc]
        self.code = code  # type: ignore[misc]


def register_problem_handlers(app: Flask) -> None:
    @app.errorhandler(BatcomputerError)
    def on_batcomputer_error(error: BatcomputerError) -> Response:
        return problem_response(error)

    @app.errorhandler(redis.RedisError)
    def on_redis_error(error: redis.RedisError) -> Response:
        log.warning("Redis unavailable: %s", error)
        return problem_response(Unavailable(f"the job store (Redis) is unreachable: {error}", retry_after=5))

    @app.errorhandler(OperationalError)
    def on_broker_error(error: OperationalError) -> Response:
        log.warning("broker unavailable: %s", error)
        return problem_response(Unavailable(f"the queue (Redis) is unreachable: {error}", retry_after=5))

    @app.errorhandler(HTTPException)
    def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        names = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}
        detail = error.description or error.name
        if status == 413:
            limit = app.config["MAX_CONTENT_LENGTH"] - 1
            return problem_response(BodyTooLarge(f"the request body is larger than the limit of {limit} bytes",
                                                 limit=limit))
        return problem_response(HttpProblem(status, error.name, detail, names.get(status, f"http_{status}")))

    @app.errorhandler(Exception)
    def on_unexpected(error: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return problem_response(HttpProblem(500, "Internal error", "an unexpected error occurred; it was logged",
                                            "internal"))
