"""The sweeper: sends again the jobs whose worker or message was lost (one sweeper at a time, across workers)."""

from __future__ import annotations

import logging
import threading

from batcomputer.files.storage import Storage, StorageRefused, remove
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import QUEUE_BULK, queue_of
from batcomputer.models.guard import Guard
from worker.webhooks import WebhookSender

log = logging.getLogger("batcomputer.sweeper")
MAX_JOBS_PER_MESSAGE = 256


class Housekeeper:
    """A thread in every worker's main process; the job store's lock lets one of them sweep at a time.
    It runs every third of the lease, so a lost worker's running jobs are sent again within
    ``lease_seconds`` plus a third of it, and stranded queued jobs within the visibility timeout plus that."""

    def __init__(self, jobs: JobStore, storage: Storage | None = None, webhook_secret: str | None = None,
                 webhook_hosts: str = "", guard: Guard | None = None) -> None:
        self.jobs = jobs
        self.guard = guard  # guarded promotion: each model's production move watched, moved back if it trips
        self.batches = BatchStore(jobs)
        self.storage = storage
        self.webhooks = WebhookSender(self.batches, webhook_secret, webhook_hosts)
        self.interval = max(0.2, jobs.lease / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> Housekeeper:
        self._thread.start()
        return self

    def resend(self, by_lane: dict[str, list[str]]) -> None:
        for queue, job_ids in by_lane.items():
            log.warning("sending %d job(s) again on %s (worker or message lost): %s", len(job_ids), queue,
                        " ".join(job_ids[:10]) + (" ..." if len(job_ids) > 10 else ""))
            size = 1 if queue_of(queue) == QUEUE_BULK else MAX_JOBS_PER_MESSAGE  # bulk: any process takes any job
            self.jobs.publish([(queue, job_ids[start:start + size]) for start in range(0, len(job_ids), size)])

    def sweep(self) -> int:
        sent = self.jobs.sweeper.sweep(self.resend)
        self.jobs.sweeper.tidy()
        self.delete_files()
        self.webhooks.deliver_due()
        self.check_guards()
        return sent

    def check_guards(self) -> None:
        if self.guard is None:
            return
        for model in self.guard.registry.models():
            try:
                self.guard.check(model)
            except Exception as exc:  # one model's registry or metrics unreadable: the others are still watched
                log.warning("could not check the guards of %s: %s", model, exc)

    def delete_files(self) -> int:
        """Delete batch files whose time is up: uploads and outputs past their retention, parts of finished
        or cancelled batches."""
        if self.storage is None:
            return 0
        due = self.batches.due_files()
        for url in due:
            try:
                remove(self.storage.confine(url, "file"))
            except StorageRefused:
                log.warning("not deleting %s: outside the storage roots now", url)
        self.batches.forget_files(due)
        return len(due)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
                failing = False
            except Exception as exc:  # Redis away, or a publish failed: the jobs stay due, try again
                if not failing:
                    log.warning("sweep failed: %s", exc)
                failing = True

    def stop(self) -> None:
        self._stop.set()
