"""What really happened to scored records (their outcomes), kept in Redis per model and keyed by the job id and
the record's index: posted by clients (``POST /api/models/{model}/outcomes``), joined by the monitor with the
captured predictions to give live quality. Sending the same outcome twice changes nothing."""

from __future__ import annotations

from typing import Any

from batcomputer.jobqueue.keyspace import Keys

KEEP_SECONDS = 30 * 86_400  # as long as captured partitions are kept, by default
MAX_ITEMS = 10_000  # outcomes per request


def outcome_key(job: str, index: int) -> str:
    return f"{job}|{index}"


class OutcomeStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def record(self, model: str, labels: tuple[str, ...], items: list[Any],
               owner: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """Keep each valid item of ``model``: ``{"job", "index", "label"}``, or ``{"key", "label"}`` with the
        client's key of a captured record; returns how many were kept and a problem per invalid item (its
        position, field and reason). A job must exist, be one of ``model``'s (and, with ``owner``, that
        key's) with a record at ``index``; a key must name a captured record (of that owner's jobs; records
        of streams and batches without a job of the caller's need an admin); a label must be one of the
        model's."""
        problems: list[dict[str, Any]] = []
        candidates: list[tuple[int, str, int, str, bool]] = []  # position, job, index, label, named by a key
        named: list[tuple[int, str, str]] = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append({"item": position, "field": "outcomes", "code": "invalid_type",
                                 "message": "an outcome is an object: {\"job\", \"index\", \"label\"} or "
                                            "{\"key\", \"label\"}"})
                continue
            job, index, label, key = item.get("job"), item.get("index", 0), item.get("label"), item.get("key")
            if label not in labels:
                problems.append({"item": position, "field": "label", "code": "unknown_label",
                                 "message": f"label must be one of {', '.join(labels)}, not {label!r}"})
            elif "key" in item:
                if not isinstance(key, str) or not key or len(key) > 200 or "job" in item:
                    problems.append({"item": position, "field": "key", "code": "invalid_type",
                                     "message": "key must be the text a record was sent with (and no job)"})
                else:
                    named.append((position, key, label))
            elif not isinstance(job, str) or not job or len(job) > 64:
                problems.append({"item": position, "field": "job", "code": "invalid_type",
                                 "message": "job must be the id of a job of this model (or send the record's key)"})
            elif isinstance(index, bool) or not isinstance(index, int) or index < 0:
                problems.append({"item": position, "field": "index", "code": "invalid_type",
                                 "message": "index must be a whole number: the record's place in its job"})
            else:
                candidates.append((position, job, index, label, False))
        if named:
            found_keys = self.redis.hmget(self.keys.outcome_keys(model, owner or ""), [key for _, key, _ in named])
            for (position, key, label), where in zip(named, found_keys, strict=True):
                if where is None:
                    problems.append({"item": position, "field": "key", "code": "unknown_key",
                                     "message": f"no captured record of {model!r} was sent with key {key!r} "
                                                "(unknown, not captured yet, or expired)"})
                else:
                    job, _, index = where.decode().rpartition("|")
                    candidates.append((position, job, int(index), label, True))
        with self.redis.pipeline(transaction=False) as pipe:
            for _, job, _, _, _ in candidates:
                pipe.hmget(self.keys.job(job), "model", "count", "owner")
            found = pipe.execute()
        kept = {}
        for (position, job, index, label, by_key), (of, count, held_by) in zip(candidates, found, strict=True):
            if by_key and of is None and owner is None:  # a stream entry's record: no job to own it
                kept[outcome_key(job, index)] = label
            elif of is None or of.decode() != model or (owner is not None and (held_by or b"").decode() != owner):
                field, code = ("key", "unknown_key") if by_key else ("job", "unknown_job")
                problems.append({"item": position, "field": field, "code": code,
                                 "message": f"no {'record' if by_key else f'job {job!r}'} of {model!r} "
                                            f"{'with that key ' if by_key else ''}(unknown, or expired)"})
            elif not by_key and index >= int(count or 0):
                problems.append({"item": position, "field": "index", "code": "unknown_record",
                                 "message": f"job {job!r} has {int(count or 0)} record(s); there is no index {index}"})
            else:
                kept[outcome_key(job, index)] = label
        if kept:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.outcomes(model), mapping=kept)
                pipe.expire(self.keys.outcomes(model), KEEP_SECONDS)
                pipe.execute()
        return len(kept), sorted(problems, key=lambda problem: problem["item"])

    def index(self, model: str, named: dict[str, dict[str, str]]) -> None:
        """Remember, per owner (an API key's id, '' for none), which captured record (``outcome_key``) each of
        its client keys names (the latest capture wins): one tenant's keys never name another's records."""
        with self.redis.pipeline(transaction=False) as pipe:
            for owner, keys in named.items():
                if keys:
                    pipe.hset(self.keys.outcome_keys(model, owner), mapping=keys)
                    pipe.expire(self.keys.outcome_keys(model, owner), KEEP_SECONDS)
            pipe.execute()

    def lookup(self, model: str, keys: list[str]) -> list[str | None]:
        """The outcome of each ``outcome_key`` (None where none was sent)."""
        if not keys:
            return []
        return [value.decode() if value is not None else None
                for value in self.redis.hmget(self.keys.outcomes(model), keys)]
