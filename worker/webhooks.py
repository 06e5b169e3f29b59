"""Webhooks: POST a finished batch's summary to its callback_url, signed, retried with backoff, then given up.

Deliveries are claimed from a sorted set by due time (``BatchStore.claim_webhooks``), so each is made by one
worker at a time and one that dies mid-delivery leaves it to another: at least once, with a
``Batcomputer-Delivery`` id a receiver can use to drop repeats.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from batcomputer.errors import NotFound
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.records import iso
from batcomputer.jobqueue.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WEBHOOK_BACKOFF_SECONDS, sign

log = logging.getLogger("batcomputer.webhooks")
TIMEOUT_SECONDS = 10.0


def summary_of(job: dict[str, Any]) -> bytes:
    """The body of a delivery: the job as ``GET /api/jobs/{id}`` shows it (a batch has no results inline)."""
    return orjson.dumps({key: value for key, value in job.items() if key != "webhook"})


class WebhookSender:
    """Makes the deliveries that are due; run from the sweeper's thread."""

    def __init__(self, batches: BatchStore, secret: str | None, timeout: float = TIMEOUT_SECONDS) -> None:
        self.batches = batches
        self.secret = secret
        self.timeout = timeout

    def deliver_due(self) -> int:
        delivered = 0
        for batch_id in self.batches.claim_webhooks():
            try:
                job = self.batches.jobs.get(batch_id)
            except NotFound:
                self.batches.record_webhook(batch_id, {}, None)
                continue
            delivered += self.deliver(batch_id, job)
        return delivered

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
        timestamp = int(time.time())
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "batcomputer-webhook",
            SIGNATURE_HEADER: sign(self.secret, timestamp, body), DELIVERY_HEADER: f"{batch_id}/{attempt}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
            error = None if 200 <= status < 300 else f"answered {status}"
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"answered {exc.code}"
        except (OSError, ValueError) as exc:
            status, error = None, str(exc) or type(exc).__name__
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
