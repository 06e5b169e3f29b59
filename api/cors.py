"""The cross-origin policy: which web pages may call the API from a browser, and that no other page changes state.

In the local profile (no keys) the gateway also answers only requests that name it by a loopback name: a page
whose DNS name is rebound to 127.0.0.1 is same-origin to the browser, and would otherwise pass.

A browser sends some requests to any site without asking first (a form post, a ``text/plain`` or bodiless
``fetch``), with an ``Origin`` header naming the page that sent them. The gateway refuses every request that
could change something (any method but GET, HEAD and OPTIONS) from an origin other than its own or one listed in
``BATCOMPUTER_CORS_ORIGINS``: 403 ``cross_origin_refused``, before the route runs. Listed origins get CORS
answers (preflights included) for the API; credentials (cookies) are never allowed: clients authenticate
with a bearer key, which a browser never adds by itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, request

from batcomputer.errors import CrossOriginRefused, HostRefused
from batcomputer.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"
EXPOSED_HEADERS = "Location, Retry-After"
PREFLIGHT_MAX_AGE = "600"


def same_origin(origin: str) -> bool:
    """Whether ``origin`` is the gateway's own (its host and port as the request names them)."""
    return urlsplit(origin).netloc.lower() == request.host.lower()


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def install(app: Flask, settings: Settings) -> None:
    allowed = frozenset(o.rstrip("/").lower() for o in settings.cors_origins.split(",") if o)

    if settings.profile == "local":  # no keys here: a page that rebinds its own name to 127.0.0.1 must not pass
        @app.before_request
        def refuse_other_hosts() -> None:
            host = (urlsplit(f"//{request.host}").hostname or "").lower()
            if host not in LOCAL_HOSTS and host != settings.api_host.lower():
                raise HostRefused(f"the local profile serves only 127.0.0.1, localhost and ::1, not {host!r} "
                                  "(a page that rebinds its name to this machine would get in)", field="Host")

    @app.before_request
    def refuse_foreign_changes() -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None or same_origin(origin):
            return None
        listed = origin.rstrip("/").lower() in allowed
        if request.method == "OPTIONS" and listed:
            response = app.response_class(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
            return response
        if request.method not in SAFE_METHODS and not listed:
            raise CrossOriginRefused(f"a page of {origin} may not {request.method} here: only the gateway's own "
                                     "pages and BATCOMPUTER_CORS_ORIGINS may change anything", field="Origin")
        return None

    @app.after_request
    def answer_cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and not same_origin(origin) and origin.rstrip("/").lower() in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.vary.add("Origin")
        return response
