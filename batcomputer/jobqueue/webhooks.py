"""Batch webhooks' contract: which callback URLs are allowed, how a delivery is signed and retried."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from batcomputer.errors import BatcomputerError

SIGNATURE_HEADER = "Batcomputer-Signature"  # t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>
DELIVERY_HEADER = "Batcomputer-Delivery"    # the job id and attempt: a receiver can drop repeats
WEBHOOK_BACKOFF_SECONDS = (0, 5, 30, 120, 600, 1800)  # attempt n waits this long after the one before
WEBHOOK_HOLD_SECONDS = 60  # a claimed delivery is retried by another worker if this one has not answered


class CallbackRefused(BatcomputerError):
    """A callback_url Batcomputer will not call: another scheme, a host not allowed, or webhooks off."""

    code = "callback_refused"
    status = 422
    title = "Callback URL refused"


def check_callback(url: Any, hosts: str, secret: str | None) -> str:
    """``url`` if batches may call it back (``BATCOMPUTER_WEBHOOK_HOSTS``, signed with the secret)."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url.strip():
        raise CallbackRefused("callback_url must be an http(s) URL", field="callback_url")
    if not secret:
        raise CallbackRefused("webhooks are off: the operator has not set BATCOMPUTER_WEBHOOK_SECRET",
                              field="callback_url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise CallbackRefused(f"callback_url {url!r} is not a valid URL", field="callback_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused(f"callback_url must be an http(s) URL, not {url!r}", field="callback_url")
    allowed = {host.strip().lower() for host in hosts.split(",") if host.strip()}
    host = parts.hostname.lower()
    if host not in allowed and (port is None or f"{host}:{port}" not in allowed):
        raise CallbackRefused(f"callback_url: the host {host!r} is not one webhooks may be sent to "
                              f"(BATCOMPUTER_WEBHOOK_HOSTS: {', '.join(sorted(allowed)) or 'none'})",
                              field="callback_url", host=host)
    return url.strip()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Batcomputer-Signature`` header of a webhook delivery."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
