"""Webhooks: POST a finished batch's summary to its callback_url, signed, retried with backoff, then given up.

Deliveries are claimed from a sorted set by due time (``BatchStore.claim_webhooks``), so each is made by one
worker at a time and one that dies mid-delivery leaves it to another: at least once, with a
``Batcomputer-Delivery`` id a receiver can use to drop repeats.

A callback URL is someone else's input, so a delivery is made the way GitHub and Stripe make theirs: the host
is resolved once and the connection goes to that address (no second lookup a rebinding DNS could answer
differently); loopback, private, link-local and other special addresses are refused unless
``BATCOMPUTER_WEBHOOK_HOSTS`` lists them by address; redirects are not followed; one deadline covers the
whole delivery (connect, TLS, send, the status line), however slowly the other end answers; and the job
records a class of error (``address_refused``, ``unresolvable``, ``unreachable``, ``timeout``,
``bad_response``, or the HTTP status), never what a raw socket error says about the network behind it.
Deliveries run in a small pool, one at a time per key, so one key's slow endpoint delays no other key's.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import orjson

from batcomputer.errors import NotFound
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.records import iso
from batcomputer.jobqueue.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WEBHOOK_BACKOFF_SECONDS, sign

log = logging.getLogger("batcomputer.webhooks")
TIMEOUT_SECONDS = 10.0  # for the whole delivery
POOL_SIZE = 4
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


class DeliveryFailed(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def summary_of(job: dict[str, Any]) -> bytes:
    """The body of a delivery: the job as ``GET /api/jobs/{id}`` shows it (a batch has no results inline)."""
    return orjson.dumps({key: value for key, value in job.items() if key != "webhook"})


def listed(hosts: str) -> frozenset[str]:
    return frozenset(host.strip().lower() for host in hosts.split(",") if host.strip())


def special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Addresses a callback may reach only when listed by address: this host, private networks, and the rest
    of what is not the public internet (link-local holds cloud metadata services)."""
    return not address.is_global or address.is_multicast  # loopback, private, link-local, reserved: not global


def resolve(host: str, port: int, allowed: frozenset[str]) -> str:
    """The one address a delivery connects to: the first the host resolves to that it may reach."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise DeliveryFailed("unresolvable", f"the host {host!r} does not resolve") from None
    for *_, sockaddr in found:
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text.split("%")[0])
        if not special(address) or text in allowed or f"{text}:{port}" in allowed or (
                address.version == 6 and f"[{text}]:{port}" in allowed):
            return text
    raise DeliveryFailed("address_refused", f"{host!r} resolves only to addresses webhooks may not reach "
                         "(loopback, private, link-local); list such an address in BATCOMPUTER_WEBHOOK_HOSTS")


def post(url: str, body: bytes, headers: dict[str, str], allowed: frozenset[str], timeout: float) -> int:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all; returns the status (no redirect followed)."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeliveryFailed("timeout", f"no answer within {timeout:g} s")
        return remaining

    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    address = resolve(host, port, allowed)
    try:
        connection = socket.create_connection((address, port), timeout=left())
    except TimeoutError:
        raise DeliveryFailed("timeout", f"no connection within {timeout:g} s") from None
    except OSError:
        raise DeliveryFailed("unreachable", "the connection was refused or failed") from None
    try:
        if secure:
            connection.settimeout(left())
            connection = ssl.create_default_context().wrap_socket(connection, server_hostname=host)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rsplit('@', 1)[-1]}",
                 f"Content-Length: {len(body)}", "Connection: close",
                 *(f"{name}: {value}" for name, value in headers.items())]
        connection.settimeout(left())
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        while b"\r\n" not in answer and len(answer) < 1024:  # the status line is all a delivery needs
            connection.settimeout(left())
            chunk = connection.recv(1024)
            if not chunk:
                break
            answer += chunk
    except DeliveryFailed:
        raise
    except ssl.SSLError:
        raise DeliveryFailed("unreachable", "the TLS handshake failed") from None
    except TimeoutError:
        raise DeliveryFailed("timeout", f"no answer within {timeout:g} s") from None
    except OSError:
        raise DeliveryFailed("unreachable", "the connection failed") from None
    finally:
        connection.close()
    match = STATUS_LINE.match(answer)
    if match is None:
        raise DeliveryFailed("bad_response", "the answer was not HTTP")
    return int(match.group(1))


class WebhookSender:
    """Makes the deliveries that are due; run from the sweeper's thread, each round bounded by the deadline."""

    def __init__(self, batches: BatchStore, secret: str | None, hosts: str = "",
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.batches = batches
        self.secret = secret
        self.allowed = listed(hosts)
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="webhook")

    def deliver_due(self) -> int:
        """Deliver what is due, one per key at a time (a key's others wait for the next round)."""
        chosen: dict[str, tuple[str, dict[str, Any]]] = {}
        for batch_id in self.batches.claim_webhooks():
            try:
                job = self.batches.jobs.get(batch_id)
            except NotFound:
                self.batches.record_webhook(batch_id, {}, None)
                continue
            owner = str(job.get("owner", ""))
            if owner in chosen:
                self.batches.schedule_webhook(batch_id)  # due again at once: the next round takes it
                continue
            chosen[owner] = (batch_id, job)
        futures = [self.pool.submit(self.deliver, batch_id, job) for batch_id, job in chosen.values()]
        return sum(future.result() for future in futures)

    def deliver(self, batch_id: str, job: dict[str, Any]) -> int:
        previous = job.get("webhook") or {}
        attempt = int(previous.get("attempts", 0)) + 1
        body = summary_of(job)
        url = job.get("callback_url", "")
        outcome: dict[str, Any] = {"url": url, "attempts": attempt, "last_attempt": iso(self.batches.jobs.clock())}
        if not self.secret:
            outcome.update(state="undeliverable", error="BATCOMPUTER_WEBHOOK_SECRET is not set on the workers")
            self.batches.record_webhook(batch_id, outcome, None)
            return 0
        headers = {"Content-Type": "application/json", "User-Agent": "batcomputer-webhook", DELIVERY_HEADER:
                   f"{batch_id}/{attempt}",
                   SIGNATURE_HEADER: sign(self.secret, int(time.time()), body)}
        status: int | None = None
        try:
            status = post(url, body, headers, self.allowed, self.timeout)
            error = None if 200 <= status < 300 else f"answered {status}"
        except DeliveryFailed as exc:
            error = f"{exc.code}: {exc}"
        if error is None:
            outcome.update(state="delivered", status=status)
            self.batches.record_webhook(batch_id, outcome, None)
            return 1
        if attempt >= len(WEBHOOK_BACKOFF_SECONDS):
            outcome.update(state="undeliverable", status=status, error=error)
            log.warning("webhook of batch %s to %s is undeliverable after %d attempts: %s", batch_id, url,
                        attempt, error)
            self.batches.record_webhook(batch_id, outcome, None)
            return 0
        wait = WEBHOOK_BACKOFF_SECONDS[attempt]
        outcome.update(state="retrying", status=status, error=error, next_attempt_in_seconds=wait)
        self.batches.record_webhook(batch_id, outcome, wait)
        return 0
