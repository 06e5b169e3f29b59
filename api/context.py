"""Access to the current app's Gateway from inside a request."""

from __future__ import annotations

from flask import current_app

from api.gateway import Gateway


def gateway() -> Gateway:
    found: Gateway = current_app.extensions["gateway"]
    return found
