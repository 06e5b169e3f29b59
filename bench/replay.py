"""Replay real records through a running Batcomputer at a chosen rate, with a drift knob, so that a person can
watch the loop close: capture, the monitor's drift and live quality, the web client's monitoring page, Grafana.

    .venv/bin/batcomputer data sample titanic var/titanic.parquet --rows 20000 --outcomes
    .venv/bin/python bench/replay.py titanic var/titanic.parquet --rate 50 --seconds 120 --drift 0.5 --outcomes

Records go as single jobs (``--via jobs``, the default; sent ``--together`` at a time, each waited for) or as
stream entries (``--via stream``). ``--drift`` (0 to 1) is the share of records moved away from the training
data: each numeric field to the top of the range its schema allows (past what training saw) and each
categorical field to the category training saw least, read from the model's own profile through the API. With
``--outcomes`` (jobs only) and an ``outcome`` column in the file, each job's real outcomes are sent back as it
ends. Only the gateway is needed: ``--url`` (default ``BATCOMPUTER_API_URL`` or the local port) and ``--key``
(``BATCOMPUTER_API_KEY``) for the production profile. Progress goes to standard error once a second.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batcomputer.files.client import Client  # noqa: E402


def shifted(schema: dict[str, Any]) -> dict[str, Any]:
    """Per field, the value a drifted record takes: the top of a numeric field's allowed range, or the
    category the training profile holds least of."""
    moved: dict[str, Any] = {}
    profile = schema.get("profile") or {}
    for field in schema["fields"]:
        name = field["name"]
        if field["kind"] == "categorical":
            shares = (profile.get(name) or {}).get("frequencies") or {}
            categories = field.get("categories") or list(shares)
            if categories:
                moved[name] = min(categories, key=lambda c: shares.get(c, 0.0))
        else:
            top = field.get("maximum")
            if top is None:
                top = ((profile.get(name) or {}).get("quantiles") or {}).get("1.0")
            if top is not None:
                moved[name] = int(top) if field.get("integer") else float(top)
    return moved


def load(path: Path, fields: list[str]) -> tuple[list[dict[str, Any]], list[str | None]]:
    """The file's records (its columns that are fields, absent values left out) and its ``outcome`` column."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [f for f in fields if f in table.column_names]
    records = [{k: v for k, v in row.items() if v is not None and v == v} for row in table.select(names).to_pylist()]
    outcomes = table.column("outcome").to_pylist() if "outcome" in table.column_names else [None] * len(records)
    return records, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/replay.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("file", type=Path, help="a Parquet file of records (`batcomputer data sample`)")
    parser.add_argument("--rate", type=float, default=20.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to replay")
    parser.add_argument("--drift", type=float, default=0.0, help="share of records moved off the training data")
    parser.add_argument("--via", choices=("jobs", "stream"), default="jobs")
    parser.add_argument("--together", type=int, default=1, help="records per job or per stream append")
    parser.add_argument("--outcomes", action="store_true", help="send the file's `outcome` of each scored job")
    parser.add_argument("--url", default=os.environ.get("BATCOMPUTER_API_URL") or
                        f"http://127.0.0.1:{os.environ.get('BATCOMPUTER_API_PORT', '8000')}")
    parser.add_argument("--key", default=os.environ.get("BATCOMPUTER_API_KEY"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 <= args.drift <= 1:
        parser.error("--drift is a share: 0 to 1")
    client = Client(args.url, api_key=args.key)
    schema = client.model(args.model)["schema"]
    records, truths = load(args.file, [f["name"] for f in schema["fields"]])
    if not records:
        parser.error(f"{args.file} holds no records")
    moved = shifted(schema)
    rng = random.Random(args.seed)
    sent = drifted = told = 0
    began = last = time.monotonic()
    while (now := time.monotonic()) - began < args.seconds:
        due = int((now - began) * args.rate)
        if due < sent + args.together:
            time.sleep(min(0.05, (sent + args.together - due) / args.rate))
            continue
        picked = [(sent + i) % len(records) for i in range(args.together)]
        batch = []
        for i in picked:
            record = dict(records[i])
            if rng.random() < args.drift:
                record.update(moved)
                drifted += 1
            batch.append(record)
        if args.via == "stream":
            client.append(args.model, batch)
        else:
            job = client.submit(args.model, batch, wait=30)
            known = [(n, truths[i]) for n, i in enumerate(picked) if truths[i] is not None]
            if args.outcomes and job.get("state") == "succeeded" and known:
                told += client.outcomes(args.model, [{"job": job["id"], "index": n, "label": label}
                                                     for n, label in known])["kept"]
        sent += len(batch)
        if now - last >= 1:
            last = now
            print(f"\r{sent:,} sent ({drifted:,} drifted), {told:,} outcomes, {sent / (now - began):,.1f}/s",
                  end="", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - began
    behind = int(min(elapsed, args.seconds) * args.rate) - sent  # what the rate asked for and was not sent
    print(f"\r{sent:,} records sent via {args.via} in {elapsed:,.0f} s ({drifted:,} drifted), {told:,} outcomes "
          f"sent" + (f"; {behind:,} behind the rate (each job is waited for: raise --together)"
                     if behind >= args.together else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
