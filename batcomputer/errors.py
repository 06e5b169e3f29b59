"""The one error hierarchy: every error carries a stable code, its HTTP status and optional details."""

from __future__ import annotations

from typing import Any, ClassVar


class BatcomputerError(Exception):
    """Base of every error Batcomputer raises on purpose."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return f"https://batcomputer.dev/problems/{self.code}"

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """Render as an RFC 9457 problem-details object."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class ConfigurationError(BatcomputerError):
    code = "configuration"
    status = 500
    title = "Invalid configuration"


class BadRequest(BatcomputerError):
    code = "bad_request"
    status = 400
    title = "Bad request"


class Unauthorized(BatcomputerError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(BatcomputerError):
    """A key without the scope a route needs."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class HostRefused(BatcomputerError):
    """A request naming a host the local profile does not serve (a DNS-rebinding page names its own)."""

    code = "host_refused"
    status = 421
    title = "Misdirected request"


class CrossOriginRefused(BatcomputerError):
    """A web page of another origin asking to change something (its browser would send it without asking)."""

    code = "cross_origin_refused"
    status = 403
    title = "Cross-origin request refused"


class TooManyRecords(BatcomputerError):
    code = "too_many_records"
    status = 413
    title = "Too many records"


class BodyTooLarge(BatcomputerError):
    code = "body_too_large"
    status = 413
    title = "Request body too large"


class UnsupportedMediaType(BatcomputerError):
    """A body of a type the route does not take; ``accepted`` lists the types it does."""

    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class ValidationFailed(BatcomputerError):
    """A record broke its model's schema; ``problems`` lists every field problem at once."""

    code = "validation"
    status = 422
    title = "Invalid record"

    MAX_PROBLEMS = 100  # listed in the answer; the rest are counted (an error is never larger than the request)
    MAX_SUMMARIZED = 10  # problems the detail names

    def __init__(self, problems: list[dict[str, Any]], detail: str | None = None) -> None:
        summary = detail or "; ".join(p["message"] for p in problems[:self.MAX_SUMMARIZED])
        if detail is None and len(problems) > self.MAX_SUMMARIZED:
            summary += f"; and {len(problems) - self.MAX_SUMMARIZED} more problem(s)"
        shown: dict[str, Any] = {"problems": problems[:self.MAX_PROBLEMS]}
        if len(problems) > self.MAX_PROBLEMS:
            shown["problems_total"] = len(problems)
        super().__init__(summary, **shown)
        self.problems = problems


class NotFound(BatcomputerError):
    code = "not_found"
    status = 404
    title = "Not found"


class ModelNotFound(NotFound):
    code = "model_not_found"
    title = "Unknown model"


class VersionNotFound(NotFound):
    code = "version_not_found"
    title = "Unknown model version"


class AliasNotFound(NotFound):
    code = "alias_not_found"
    title = "Unknown alias"


class Conflict(BatcomputerError):
    code = "conflict"
    status = 409
    title = "Conflict"


class AliasMoved(Conflict):
    """An alias no longer points where its mover compared (compare-and-set)."""

    code = "alias_moved"
    title = "Alias moved meanwhile"


class AliasPinned(Conflict):
    """A person pinned the alias: automatic moves wait until it is unpinned."""

    code = "alias_pinned"
    title = "Alias pinned"


class IntegrityError(BatcomputerError):
    """A bundle file or manifest does not match its recorded hash, or was built by an incompatible stack."""

    code = "integrity"
    status = 500
    title = "Bundle integrity check failed"


class RegistryCorrupt(BatcomputerError):
    """A registry file (index entry, alias, manifest) that is not what Batcomputer wrote: truncated or edited."""

    code = "registry_corrupt"
    status = 500
    title = "Registry file unreadable"


class IncompatibleBundle(IntegrityError):
    code = "incompatible_bundle"
    title = "Bundle built with an incompatible library version"


class TooManyRequests(BatcomputerError):
    """Backpressure: the work already waiting passed its limit; ``retry_after`` says when to come back."""

    code = "too_many_requests"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class Unavailable(BatcomputerError):
    code = "unavailable"
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class DataError(BatcomputerError):
    code = "data"
    status = 500
    title = "Dataset problem"


class ScoringFailed(BatcomputerError):
    code = "scoring_failed"
    status = 502
    title = "The worker could not score the record"


class TimedOut(BatcomputerError):
    """Scoring ran past its time limit and was stopped (the limit and what ran are in the detail)."""

    code = "timeout"
    status = 504
    title = "Scoring ran past its time limit"


class ModelError(BatcomputerError):
    """The model raised while scoring (a summary; the worker's log has the traceback)."""

    code = "scoring_error"
    status = 500
    title = "The model could not score the records"


class NotExplainable(BatcomputerError):
    """``explain`` asked of a model version whose predictions cannot be explained (it keeps no background)."""

    code = "not_explainable"
    status = 422
    title = "This model version cannot explain its predictions"
