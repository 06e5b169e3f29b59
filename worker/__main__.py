"""Run one Celery worker process: ``python -m worker --queues records`` (``batcomputer worker`` supervises it)."""

from __future__ import annotations

import argparse
import os

from batcomputer.jobqueue.keyspace import QUEUE_BULK, QUEUE_RECORDS, QUEUES, lanes
from batcomputer.logs import configure_logging
from batcomputer.settings import Settings, per_core
from worker.app import make_worker_app


def worker_argv(settings: Settings, queues: list[str], loglevel: str, node: str = "") -> list[str]:
    """Record workers use threads (records wait together for a micro-batch); bulk workers use processes.
    Heartbeats stay on (Flower and `celery status` see the workers by them; one small message every 2 s);
    task events are off unless a monitor such as Flower turns them on (it does, by a control command)."""
    consumed = [lane for queue in queues for lane in lanes(queue)]  # taken in turn: no key waits behind another
    common = ["worker", "-Q", ",".join(consumed), "-l", loglevel, "--without-gossip", "--without-mingle",
              "-n", node or f"{'+'.join(queues)}-%i@%h"]
    if QUEUE_RECORDS in queues:
        return [*common, "-P", "threads", "-c", str(settings.record_threads), "--prefetch-multiplier", "1"]
    return [*common, "-P", "prefork", "-c", str(per_core(settings.worker_concurrency)), "--prefetch-multiplier", "1"]


def main(argv: list[str] | None = None) -> None:
    # One thread per scoring call: processes and micro-batches give the parallelism; OpenMP threads on top
    # of them only spin and fight for the same cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--queues", default=QUEUE_RECORDS, help=f"comma-separated, of {QUEUES}")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--node", default="", help="this worker's name in the metrics (its supervisor's)")
    args = parser.parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if unknown:
        parser.error(f"unknown queue(s) {unknown}; queues are {QUEUE_RECORDS}, {QUEUE_BULK}")
    settings = Settings.from_env()
    configure_logging(settings, args.loglevel)
    make_worker_app(settings, queues, args.node).worker_main(worker_argv(settings, queues, args.loglevel, args.node))


if __name__ == "__main__":
    main()
