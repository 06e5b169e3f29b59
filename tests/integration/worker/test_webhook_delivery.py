"""Webhook deliveries that cannot be turned against the network behind the workers (issue 30's probe): no
redirects, no unlisted loopback or private addresses, one deadline for a delivery however slowly the endpoint
answers, errors by class, and one key's slow endpoint delaying no other key's delivery."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.jobs import JobStore
from tests.conftest import Services, free_port
from worker.webhooks import TIMEOUT_SECONDS, WebhookSender


class Endpoint:
    """A raw TCP endpoint on 127.0.0.1 that answers every connection with ``answer`` (bytes, sent ``pace``
    seconds apart per byte when ``pace`` is set), and counts connections."""

    def __init__(self, answer: bytes, pace: float = 0.0) -> None:
        self.answer, self.pace = answer, pace
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.reply, args=(conn,), daemon=True).start()

    def reply(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                if self.pace:
                    for byte in self.answer:
                        if self.stopped.wait(self.pace):
                            return
                        conn.sendall(bytes([byte]))
                else:
                    conn.sendall(self.answer)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.server.close()


@pytest.fixture
def store(services: Services) -> Iterator[tuple[JobStore, BatchStore]]:
    jobs = JobStore.from_settings(redis.Redis.from_url(services.settings.redis_url or ""), services.settings)
    yield jobs, BatchStore(jobs)


def finished_batch(jobs: JobStore, batches: BatchStore, batch_id: str, url: str, owner: str = "shop") -> None:
    jobs.create(batch_id, "titanic", 1, "f" * 64, [], "bulk",
                extra={"kind": "batch", "callback_url": url, "owner": owner})
    jobs.end([(batch_id, "succeeded", {})])
    batches.schedule_webhook(batch_id)


def test_a_redirect_is_not_followed_and_unlisted_loopback_is_never_contacted(
        store: tuple[JobStore, BatchStore]) -> None:
    jobs, batches = store
    inside = Endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # say, the gateway's /metrics
    redirect = Endpoint(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{inside.port}/metrics\r\n"
                        f"Content-Length: 0\r\n\r\n".encode())
    try:
        finished_batch(jobs, batches, "b-redirect", f"http://127.0.0.1:{redirect.port}/hook")
        finished_batch(jobs, batches, "b-inside", f"http://localhost:{inside.port}/metrics", owner="other")
        sender = WebhookSender(batches, "secret", f"127.0.0.1:{redirect.port}, localhost:{inside.port}")
        assert sender.deliver_due() == 0
        redirected = jobs.get("b-redirect")["webhook"]
        assert redirected["state"] == "retrying" and redirected["status"] == 302
        assert redirected["error"] == "answered 302"
        refused = jobs.get("b-inside")["webhook"]
        assert refused["error"].startswith("address_refused")  # listed by name, resolving to loopback
        assert redirect.connections == 1 and inside.connections == 0
    finally:
        inside.close()
        redirect.close()


def test_one_deadline_covers_a_delivery_that_trickles_and_other_keys_are_not_held(
        store: tuple[JobStore, BatchStore]) -> None:
    jobs, batches = store
    slow = Endpoint(b"HTTP/1.1 200 OK\r\n", pace=1.0)  # a byte a second: never done within the deadline
    fast = Endpoint(b"HTTP/1.1 204 No Content\r\n\r\n")
    try:
        finished_batch(jobs, batches, "b-slow", f"http://127.0.0.1:{slow.port}/", owner="slowpoke")
        finished_batch(jobs, batches, "b-slow-2", f"http://127.0.0.1:{slow.port}/", owner="slowpoke")
        finished_batch(jobs, batches, "b-fast", f"http://127.0.0.1:{fast.port}/", owner="shop")
        sender = WebhookSender(batches, "secret", f"127.0.0.1:{slow.port},127.0.0.1:{fast.port}")
        started = time.monotonic()
        assert sender.deliver_due() == 1
        took = time.monotonic() - started
        assert jobs.get("b-fast")["webhook"]["state"] == "delivered"
        assert jobs.get("b-slow")["webhook"]["error"].startswith("timeout")
        assert TIMEOUT_SECONDS <= took < TIMEOUT_SECONDS + 5  # one deadline, not one per byte read
        assert "webhook" not in jobs.get("b-slow-2")  # the same key's second delivery waits its turn
        assert "b-slow-2" in batches.claim_webhooks()  # due again at once, for the next round
    finally:
        slow.close()
        fast.close()


def test_an_unreachable_endpoint_is_recorded_as_a_class_not_a_socket_error(store: tuple[JobStore, BatchStore]) -> None:
    jobs, batches = store
    port = free_port()
    finished_batch(jobs, batches, "b-gone", f"http://127.0.0.1:{port}/")
    WebhookSender(batches, "secret", f"127.0.0.1:{port}").deliver_due()
    assert jobs.get("b-gone")["webhook"]["error"] == "unreachable: the connection was refused or failed"
