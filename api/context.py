"""Access, from inside a request, to the current app's Gateway and to the request body within its limit."""

from __future__ import annotations

from flask import current_app, request

from api.gateway import Gateway
from batcomputer.errors import BodyTooLarge, UnsupportedMediaType

JSON = ("application/json",)


def gateway() -> Gateway:
    found: Gateway = current_app.extensions["gateway"]
    return found


def require_media(accepted: tuple[str, ...]) -> str:
    """The request's media type if the route takes it; otherwise a 415 naming the types it takes. A body
    without a type is refused too (a web page can send one to any site without asking first)."""
    mimetype = request.mimetype
    if mimetype in accepted or (mimetype.endswith("+json") and "application/json" in accepted):
        return mimetype
    given = f"{mimetype!r}" if mimetype else "no Content-Type"
    raise UnsupportedMediaType(f"this route takes {' or '.join(accepted)}, not {given}", field="Content-Type",
                               accepted=list(accepted))


def read_body(accepted: tuple[str, ...] = JSON, typeless: bool = False) -> bytes:
    """The request body; a body over ``BATCOMPUTER_MAX_BODY_BYTES`` is a 413, also when it comes chunked
    (the app lets the server read one byte past the limit, so that a longer stream is seen, not cut). A
    non-empty body of another media type than ``accepted`` is a 415; so is one without a type, unless
    ``typeless`` (for protocols whose clients send none; other sites' pages are refused by the CORS policy)."""
    has_body = request.content_length != 0 and (request.content_length or request.headers.get("Transfer-Encoding"))
    if has_body and not (typeless and not request.mimetype):
        require_media(accepted)
    limit = gateway().settings.max_body_bytes
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        raise BodyTooLarge(f"the request body is larger than the limit of {limit} bytes", limit=limit)
    return raw
