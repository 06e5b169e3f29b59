"""Access, from inside a request, to the current app's Gateway and to the request body within its limit."""

from __future__ import annotations

from flask import current_app, request

from api.gateway import Gateway
from batcomputer.errors import BodyTooLarge


def gateway() -> Gateway:
    found: Gateway = current_app.extensions["gateway"]
    return found


def read_body() -> bytes:
    """The request body; a body over ``BATCOMPUTER_MAX_BODY_BYTES`` is a 413, also when it comes chunked
    (the app lets the server read one byte past the limit, so that a longer stream is seen, not cut)."""
    limit = gateway().settings.max_body_bytes
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        raise BodyTooLarge(f"the request body is larger than the limit of {limit} bytes", limit=limit)
    return raw
