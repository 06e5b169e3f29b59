"""The OpenAPI document (/openapi.json, /swagger.json) and the interactive docs page, served with local assets."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, send_from_directory

from api.context import gateway
from api.openapi import build_document
from batcomputer.errors import NotFound

docs = Blueprint("docs", __name__)
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Batcomputer API</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="icon" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="docs"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs", validatorUrl: null,
                                 deepLinking: true, tryItOutEnabled: true});
  </script>
</body>
</html>
"""


@docs.get("/openapi.json")
def openapi() -> dict[str, Any]:
    gw = gateway()
    return build_document(gw.registry, gw.settings.default_model, gw.settings.default_alias)


@docs.get("/swagger.json")
def swagger() -> dict[str, Any]:
    return openapi()


@docs.get("/api/docs")
def page() -> Response:
    return Response(PAGE, mimetype="text/html")


@docs.get("/api/docs/assets/<filename>")
def asset(filename: str) -> Response:
    from swagger_ui_bundle import swagger_ui_path

    if filename not in ASSETS:
        raise NotFound(f"no documentation asset {filename!r}")
    return send_from_directory(str(swagger_ui_path), filename, max_age=86_400)
