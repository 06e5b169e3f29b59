"""Scoring streams in Redis: producers' appends with backpressure, consumers' outputs written exactly once.

Per model an input stream, an output stream and a dead-letter stream (names in ``keyspace``), read by one
consumer group. A consumer writes the outputs (or dead letters) of a micro-batch and acknowledges its entries
in one Lua script, which writes an entry's output only while the entry is still pending for the group: an
entry scored twice (claimed from a consumer presumed dead that was only slow) gets one output, whoever
finishes first. Output and dead-letter streams are trimmed (MAXLEN ~); the input stream is trimmed below
the oldest entry still pending or undelivered, so nothing unscored is ever cut.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from batcomputer.errors import TooManyRequests
from batcomputer.jobqueue.keyspace import STREAM_GROUP, Keys
from batcomputer.jobqueue.lua import Scripts

MIN_REDIS = (6, 2)  # XAUTOCLAIM

@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[str, str]
    deliveries: int = 1


def redis_version(client: Any) -> tuple[int, ...]:
    text = str(client.info("server").get("redis_version", "0"))
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def check_redis(client: Any) -> None:
    """Streams need XAUTOCLAIM (Redis 6.2): say so at start-up rather than fail at the first claim."""
    found = redis_version(client)
    if found < MIN_REDIS:
        raise RuntimeError(f"streams need Redis >= {'.'.join(map(str, MIN_REDIS))} (XAUTOCLAIM); this one is "
                           f"{'.'.join(map(str, found))}")


class StreamStore:
    """One model's streams."""

    def __init__(self, client: Any, prefix: str, model: str, maxlen: int = 100_000) -> None:
        self.redis = client
        self.model = model
        keys = Keys(prefix)
        self.input, self.output = keys.stream(model, "in"), keys.stream(model, "out")
        self.dead = keys.stream(model, "dead")
        self.stats = keys.stream(model, "stats")
        self.maxlen = maxlen
        self.scripts = Scripts(client)

    # -- producers ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the model's input stream exists (anything was ever appended)."""
        return bool(self.redis.exists(self.input))

    def backlog(self) -> int:
        """Entries not yet scored: the group's lag (entries not yet delivered) plus those pending."""
        try:
            groups = self.redis.xinfo_groups(self.input)
        except redis.ResponseError:  # no stream yet
            return 0
        for group in groups:
            if _text(group.get("name")) == STREAM_GROUP:
                lag = group.get("lag")
                if lag is None:  # Redis cannot tell (entries deleted before they were read): the length,
                    return int(self.redis.xlen(self.input))  # which can only overstate it (as append.lua)
                return int(lag) + int(group.get("pending", 0))
        return int(self.redis.xlen(self.input))

    def pending(self) -> int:
        """Entries read by a consumer and not yet acknowledged (0 before any consumer reads)."""
        try:
            groups = self.redis.xinfo_groups(self.input)
        except redis.ResponseError:
            return 0
        return sum(int(g.get("pending", 0)) for g in groups if _text(g.get("name")) == STREAM_GROUP)

    def append(self, records: list[bytes], limit: int, meta: dict[str, str] | None = None,
               keys: list[str | None] | None = None) -> list[str]:
        """Append records (their JSON) unless the backlog would pass ``limit``: then ``TooManyRequests`` with a
        Retry-After from the rate consumers score at. Checked and appended in one script (``append.lua``), so
        concurrent producers never pass the limit together, in one round trip however many records. ``keys``:
        the client's key of each record (an entry field ``key``; None for none)."""
        pairs = [part for pair in (meta or {}).items() for part in pair]
        body: list[Any] = list(records) if keys is None else [
            part for key, record in zip(keys, records, strict=True) for part in (key or "", record)]
        reply = self.scripts.call("append", [self.input], [limit, STREAM_GROUP, len(pairs) // 2, *pairs,
                                                           0 if keys is None else 1, *body])
        if _text(reply[0]) == "full":
            backlog = int(reply[1])
            rate = self.rate()
            wait = max(1, min(300, round((backlog + len(records) - limit) / rate))) if rate else 10
            raise TooManyRequests(f"the input stream of {self.model!r} holds {backlog} unscored entries (limit "
                                  f"{limit}); retry in {wait} s", retry_after=wait, backlog=backlog, limit=limit)
        return [_text(found) for found in reply[1:]]

    # -- consumers ---------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.input, STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        reply = self.redis.xreadgroup(STREAM_GROUP, consumer, {self.input: ">"}, count=count, block=block_ms)
        if not reply:
            return []
        return [Entry(_text(entry_id), _fields(fields)) for entry_id, fields in reply[0][1]]

    def claim(self, consumer: str, idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer took and has not acknowledged for ``idle_ms``, with their delivery counts."""
        reply = self.redis.xautoclaim(self.input, STREAM_GROUP, consumer, idle_ms, "0-0", count=count)
        claimed = [(_text(entry_id), fields) for entry_id, fields in reply[1] if fields is not None]
        if not claimed:
            return []
        counts = {}
        for item in self.redis.xpending_range(self.input, STREAM_GROUP, min=claimed[0][0], max=claimed[-1][0],
                                              count=len(claimed) * 2, consumername=consumer):
            counts[_text(item["message_id"])] = int(item["times_delivered"])
        return [Entry(entry_id, _fields(fields), counts.get(entry_id, 2)) for entry_id, fields in claimed]

    def deliver(self, outputs: list[tuple[str, dict[str, Any]]], dead: list[tuple[str, dict[str, Any]]]) -> int:
        """Write each output and dead letter and acknowledge its entry, in one script; returns how many were
        written (an entry another consumer finished first is skipped)."""
        batch = [[kind, entry_id, [part for pair in fields.items() for part in pair]]
                 for kind, items in (("out", outputs), ("dead", dead)) for entry_id, fields in items]
        if not batch:
            return 0
        written, _ = self.scripts.call("deliver", [self.input, self.output, self.dead, self.stats],
                                       [STREAM_GROUP, self.maxlen, self.maxlen, orjson.dumps(batch)])
        return int(written)

    def trim_input(self) -> None:
        """Drop input entries below the oldest one still pending or not yet delivered: all scored."""
        summary = self.redis.xpending(self.input, STREAM_GROUP)
        groups = [g for g in self.redis.xinfo_groups(self.input) if _text(g.get("name")) == STREAM_GROUP]
        if not groups:
            return
        last = _text(groups[0]["last-delivered-id"])
        floor = _next_id(last)
        if summary and summary.get("pending"):
            floor = min(floor, _text(summary["min"]), key=_id_key)
        self.redis.xtrim(self.input, minid=floor, approximate=True)

    def record_rate(self, consumer: str, per_second: float) -> None:
        self.redis.hset(self.stats, f"rate:{consumer}", orjson.dumps({"rate": round(per_second, 1),
                                                                        "at": time.time()}))

    def rate(self, fresh_seconds: float = 30) -> float:
        """Entries per second the live consumers reported (each its own recent rate)."""
        total = 0.0
        for name, raw in self.redis.hgetall(self.stats).items():
            if _text(name).startswith("rate:"):
                found = orjson.loads(raw)
                if time.time() - found["at"] < fresh_seconds:
                    total += float(found["rate"])
        return total

    def status(self) -> dict[str, Any]:
        counters = {_text(k): _text(v) for k, v in self.redis.hgetall(self.stats).items()}
        consumers = 0
        try:
            groups = [g for g in self.redis.xinfo_groups(self.input) if _text(g.get("name")) == STREAM_GROUP]
            consumers = int(groups[0]["consumers"]) if groups else 0
            pending = int(groups[0]["pending"]) if groups else 0
        except redis.ResponseError:
            pending = 0
        return {"model": self.model, "input": self.redis.xlen(self.input), "backlog": self.backlog(),
                "pending": pending, "output": self.redis.xlen(self.output), "dead": self.redis.xlen(self.dead),
                "consumers": consumers, "scored": int(counters.get("scored", 0)),
                "dead_letters": int(counters.get("dead", 0)), "rate_per_second": round(self.rate(), 1)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def _next_id(entry_id: str) -> str:
    millis, sequence = _id_key(entry_id)
    return f"{millis}-{sequence + 1}"
