"""The web client: its page and assets at ``/`` and ``/web/``, and its fonts from their npm packages.

Everything the page loads comes from the gateway (a Content-Security-Policy of 'self' says so to the browser):
the HTML, CSS and JS in ``api/web/``, and the fonts from ``node_modules/@fontsource/<package>/files`` (npm
packages, installed by ``npm ci``; without them the page falls back to the system's monospace font).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from batcomputer.errors import NotFound

web = Blueprint("web", __name__)
PAGES = Path(__file__).resolve().parent / "web"
FONTS = Path(__file__).resolve().parent.parent / "node_modules" / "@fontsource"
FONT_PACKAGES = ("share-tech-mono",)  # the only packages whose files are served
POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
          "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
          "form-action 'self'")


def guarded(response: Response, cache_seconds: int) -> Response:
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = f"public, max-age={cache_seconds}" if cache_seconds else "no-cache"
    return response


@web.get("/")
def index() -> Response:
    return guarded(send_from_directory(PAGES, "index.html"), 0)


@web.get("/web/<path:filename>")
def asset(filename: str) -> Response:
    if filename.startswith("fonts/"):
        raise NotFound(f"no web asset {filename!r}", field="filename")
    try:
        return guarded(send_from_directory(PAGES, filename), 0)
    except Exception:  # werkzeug's NotFound, or a path outside the folder
        raise NotFound(f"no web asset {filename!r}", field="filename") from None


@web.get("/web/fonts/<package>/<filename>")
def font(package: str, filename: str) -> Response:
    if package not in FONT_PACKAGES or not filename.endswith((".woff2", ".woff")):
        raise NotFound(f"no font {package}/{filename}", field="filename")
    try:
        return guarded(send_from_directory(FONTS / package / "files", filename), 86_400)
    except Exception:
        raise NotFound(f"no font {package}/{filename} (run `npm ci` to install the web client's fonts)",
                       field="filename") from None
