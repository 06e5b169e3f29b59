"""The gateway's service layer: resolve and pin versions, validate records, create and enqueue jobs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from api.inbox import Inbox
from api.publisher import Publisher
from batcomputer.apikeys import Key
from batcomputer.errors import BadRequest, NotExplainable, ScoringFailed, TimedOut, TooManyRecords, Unavailable
from batcomputer.files.storage import Storage
from batcomputer.jobqueue.admission import Share, share_of
from batcomputer.jobqueue.batches import BatchStore
from batcomputer.jobqueue.connection import redis_client
from batcomputer.jobqueue.jobs import JobStore
from batcomputer.jobqueue.keyspace import FINAL, QUEUE_BULK, QUEUE_RECORDS, SUCCEEDED, lane_for
from batcomputer.jobqueue.records import Payload, RawJSON, body_digest, decode_final, new_job_id
from batcomputer.models.bundle import BACKGROUND_FILE
from batcomputer.models.registry import Registry, parse_version
from batcomputer.models.rollout import CANARY_ALIAS, RUNNING, Canary, CanaryStore, takes_canary
from batcomputer.models.schema import Schema, clean_json, validate_records
from batcomputer.settings import Settings

log = logging.getLogger("batcomputer.api")
HEADLINE_METRICS = ("log_loss", "roc_auc", "pr_auc", "accuracy")
MAX_INT_DIGITS = 300  # beyond this a JSON integer is no number a model can hold (floats end near 1.8e308)


@dataclass(frozen=True)
class Pinned:
    """A model version a job is pinned to at submission, with the schema it validates against."""

    model: str
    version: int
    sha256: str
    schema: Schema
    alias: str | None
    explainable: bool = False  # it keeps a background sample: ?explain=true can be answered


@dataclass(frozen=True)
class Submitted:
    job: dict[str, Any]
    final: bool


MAX_KEY_CHARS = 200  # a client's key of a record


def check_key(key: Any, where: str) -> str:
    """A client's key of a record: text of 1 to ``MAX_KEY_CHARS`` characters."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise BadRequest(f"{where} must be text of 1 to {MAX_KEY_CHARS} characters (the client's own key of the "
                         "record, to send its outcome by later)", field=where.split("[")[0])
    return key


def keys_of(body: dict[str, Any], count: int) -> list[str | None] | None:
    """The ``keys`` beside a body's ``records``: one per record (null where a record has none), or None."""
    keys = body.get("keys")
    if keys is None:
        return None
    if not isinstance(keys, list) or len(keys) != count:
        raise BadRequest(f"keys must be a list of one key per record ({count}), each text or null", field="keys")
    return [None if key is None else check_key(key, f"keys[{i}]") for i, key in enumerate(keys)]


def record_keys(body: Any, count: int, key: str | None) -> list[str | None] | None:
    """The client's keys of a request's ``count`` records: ``"keys"`` beside ``"records"``, or ``key`` (the
    ``?key=`` of a one-record request); None without either."""
    keys = keys_of(body, count) if isinstance(body, dict) and "records" in body else None
    if key is None:
        return keys
    if keys is not None or count != 1:
        raise BadRequest("key names one record's key; a list's keys go in \"keys\" beside \"records\"", field="key")
    return [check_key(key, "key")]


CANARY_READ_SECONDS = 1.0  # how soon a changed canary reaches every gateway process


class Gateway:
    """Everything the routes need, built once per app from the settings."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry or Registry.from_settings(settings)
        # Requests wait in the inbox, never on a connection: a small pool serves any number of them. Only
        # the inbox reader blocks (BLPOP, 1 s at a time).
        self.redis = redis_client(settings, pool_size=64)
        self.jobs = JobStore.from_settings(self.redis, settings)
        self.publisher = Publisher(self.jobs.publish)
        self.inbox = Inbox(self.redis, settings.key_prefix)
        self.storage = Storage.from_settings(settings)
        self.batches = BatchStore(self.jobs)
        self.verified: dict[tuple[str, int], float] = {}  # (model, version) -> verified until (monotonic)
        self._schemas: OrderedDict[tuple[str, int], tuple[Schema, str, bool]] = OrderedDict()
        self._facts: dict[tuple[str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.canaries = CanaryStore(self.redis, settings.key_prefix)
        self._canaries: dict[str, tuple[float, Canary | None]] = {}  # model -> (read at, monotonic), canary

    def pin(self, model: str, version: str | None = None, alias: str | None = None) -> Pinned:
        """Resolve ``version``, ``alias`` or the default alias to one immutable version, now."""
        if version is not None and alias is not None:
            raise BadRequest("give either version or alias, not both", field="version")
        number = self.registry.resolve(model, parse_version(version) if version is not None else alias,
                                       self.settings.default_alias)
        key = (model, number)
        with self._lock:
            cached = self._schemas.get(key)
        if cached is None:
            bundle = self.registry.bundle(model, number)
            cached = (bundle.schema, bundle.sha256, BACKGROUND_FILE in bundle.manifest.get("files", {}))
            with self._lock:
                self._schemas[key] = cached
                while len(self._schemas) > 64:
                    self._schemas.popitem(last=False)
        return Pinned(model, number, cached[1], cached[0], None if version is not None else
                      (alias or self.settings.default_alias), cached[2])

    def route(self, model: str, version: str | None, alias: str | None, sticky: str | None) -> Pinned:
        """Like ``pin``, and a request that names neither a version nor an alias goes to the model's canary
        version for the canary's share of them (sticky by the client's key, ``batcomputer.models.rollout``).
        The canary is read at most once a second per process."""
        pinned = self.pin(model, version, alias)
        if version is not None or alias is not None:
            return pinned  # pinned requests are never rerouted
        now = time.monotonic()
        with self._lock:
            cached = self._canaries.get(model)
        if cached is None or now - cached[0] >= CANARY_READ_SECONDS:
            cached = (now, self.canaries.get(model))
            with self._lock:
                self._canaries[model] = cached
        canary = cached[1]
        if (canary is None or canary.state != RUNNING or canary.version == pinned.version
                or not takes_canary(model, canary.percent, sticky)):
            return pinned
        routed = self.pin(model, str(canary.version))
        return Pinned(model, routed.version, routed.sha256, routed.schema, CANARY_ALIAS, routed.explainable)

    def parse_explain(self, raw: Any, pinned: Pinned) -> bool:
        """A request's ``explain``: true asks for each field's contribution to each output; a version that keeps
        no background sample cannot give them (422)."""
        if raw is None or raw == "" or raw is False:
            return False
        if raw is True or str(raw).lower() in ("true", "1", "yes"):
            if not pinned.explainable:
                raise NotExplainable(f"{pinned.model}@{pinned.version} was published without a background sample "
                                     f"and cannot explain its predictions; retrain it to explain them",
                                     field="explain", model=pinned.model, version=pinned.version)
            return True
        if str(raw).lower() in ("false", "0", "no"):
            return False
        raise BadRequest(f"explain must be true or false, not {raw!r}", field="explain")

    def version_facts(self, model: str, version: int) -> dict[str, Any]:
        """A version's headline holdout metrics and the flow run that published it (versions are immutable:
        read once per process)."""
        key = (model, version)
        with self._lock:
            found = self._facts.get(key)
        if found is None:
            bundle = self.registry.bundle(model, version)
            importance = bundle.metrics.get("importance") or {}
            positive = bundle.schema.outputs[-1] if bundle.schema.outputs else ""
            found = {"metrics": {k: bundle.metrics.get(k) for k in HEADLINE_METRICS if k in bundle.metrics},
                     "run": bundle.manifest.get("run"),
                     "explainable": BACKGROUND_FILE in bundle.manifest.get("files", {}),
                     # each field's mean absolute contribution to the last output, on the holdout
                     **({"importance": importance[positive]} if positive in importance else {})}
            with self._lock:
                self._facts[key] = found
        return found

    def records_of(self, body: Any) -> list[Any]:
        """The records of a body: one record, or ``{"records": [...]}``."""
        if isinstance(body, dict) and "records" in body:
            records = body["records"]
            if not isinstance(records, list) or not records:
                raise BadRequest("records must be a non-empty JSON array of records", field="records")
            self.check_count(len(records))
            return records
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object: one record, or {\"records\": [...]}", field="body")
        return [body]

    def submit_body(self, pinned: Pinned, raw: bytes, idempotency: tuple[str, bytes] | None = None,
                    wait: float = 0.0, single: bool = False, owner: Key | None = None,
                    timeout: float | None = None, explain: bool = False, key: str | None = None) -> Submitted:
        """Submit a request body: one record, or ``{"records": [...]}`` (only one record when ``single``),
        with ``"keys"`` beside the records (or ``key`` for one record): the client's key of each record, by
        which it may send outcomes later. A plainly valid body is decoded and validated in one pass
        (``clean_json``); anything else takes the detailed path, whose errors name every field and reason."""
        fast = clean_json(pinned.schema, raw)
        if fast is None or (single and b'"records"' in raw):
            body = parse_json(raw)
            if single and isinstance(body, dict) and "records" in body:
                raise BadRequest("/api/predict takes one record; send lists to /api/models/{model}/jobs",
                                 field="records")
            records = self.records_of(body)
            keys = record_keys(body, len(records), key)
            return self.submit(pinned, records, idempotency, wait, owner, "predict" if single else "job",
                               timeout, explain, keys)
        payload, count = fast
        self.check_count(count)
        return self._enqueue(pinned, Payload(payload, count), idempotency, wait, owner, "predict" if single else "job",
                             timeout, explain, record_keys(None, count, key))

    def share(self) -> Share:
        """What one key may hold of a queue (``BATCOMPUTER_KEY_SHARE``, ``BATCOMPUTER_KEY_RESERVE``)."""
        return share_of(self.settings.max_queue_depth, self.settings.key_share, self.settings.key_reserve)

    def check_count(self, count: int) -> None:
        if count > self.settings.max_records:
            raise TooManyRecords(f"{count} records in one request; the limit is {self.settings.max_records}",
                                 field="records", limit=self.settings.max_records)

    def submit(self, pinned: Pinned, records: list[Any], idempotency: tuple[str, bytes] | None = None,
               wait: float = 0.0, owner: Key | None = None, source: str = "job",
               timeout: float | None = None, explain: bool = False, keys: list[str | None] | None = None) -> Submitted:
        """Validate, create the job record, enqueue it; optionally wait up to ``wait`` seconds for it."""
        return self._enqueue(pinned, validate_records(pinned.schema, records), idempotency, wait, owner, source,
                             timeout, explain, keys)

    def _enqueue(self, pinned: Pinned, clean: list[dict[str, Any]] | Payload,
                 idempotency: tuple[str, bytes] | None, wait: float, owner: Key | None = None,
                 source: str = "job", timeout: float | None = None, explain: bool = False,
                 keys: list[str | None] | None = None) -> Submitted:
        """Create the job record, enqueue it; optionally wait up to ``wait`` seconds for it.

        The job record is the commitment: once it exists the job will run. If the message cannot be sent
        afterwards, the answer is still the job (202): the sweeper sends it within the visibility timeout.
        A key's job (``owner``) belongs to the key's id, goes on the key's lane and counts in its share.
        """
        count = clean.count if isinstance(clean, Payload) else len(clean)
        job_id = new_job_id()
        claim = None
        if idempotency is not None:
            key, raw = idempotency
            key = f"{owner.id}\0{key}" if owner else key  # one client's key never finds another's job
            claim = (key, body_digest(pinned.model, str(pinned.version), raw))
        queue = QUEUE_RECORDS if count <= self.settings.bulk_threshold_records else QUEUE_BULK
        lane = lane_for(queue, owner.ordinal if owner else 0)
        finished = self.inbox.expect(job_id) if wait > 0 else None
        try:
            created = self.jobs.create(job_id, pinned.model, pinned.version, pinned.sha256, clean, queue,
                                       pinned.alias, self.inbox.key if finished else None, claim,
                                       extra={**({"owner": owner.id} if owner else {}),
                                              **({"source": source} if source != "job" else {}),
                                              **({"timeout": f"{timeout:g}"} if timeout else {}),
                                              **({"explain": "1"} if explain else {}),
                                              **({"keys": json.dumps(keys)} if keys else {})} or None,
                                       limit=self.settings.max_queue_depth, lane=lane, share=self.share())
            if not created.new:  # the same request came before (perhaps at this very moment)
                job = self.wait_for(created.job_id, wait)
                return Submitted(job, job["state"] in FINAL)
            job = created.job or {}
            try:
                self.publisher.publish(job_id, lane)
            except Exception as exc:
                log.warning("job %s is accepted but its message could not be sent (%s); the sweeper will "
                            "send it", job_id, exc)
            if finished is not None:
                entry = finished.wait(wait)
                job = decode_final(entry) if entry is not None else self.jobs.get(job_id)
        finally:
            self.inbox.forget(job_id)
        return Submitted(job, job["state"] in FINAL)

    def results_of(self, submitted: Submitted, what: str) -> list[dict[str, Any]]:
        """The results of a job a synchronous route waited for: a 503 when no worker finished ``what`` in time
        (the job goes on), a 502 when it failed."""
        job = submitted.job
        if not submitted.final:
            raise Unavailable(f"no worker scored {what} within {self.settings.predict_timeout_seconds:g} s; "
                              f"the job continues as /api/jobs/{job['id']}", retry_after=2, job=job["id"])
        if job["state"] != SUCCEEDED:
            detail = (job.get("error") or {}).get("detail", job["state"])
            if (job.get("error") or {}).get("code") == TimedOut.code:
                raise TimedOut(f"job {job['id']} ended {job['state']}: {detail}", job=job["id"])
            raise ScoringFailed(f"job {job['id']} ended {job['state']}: {detail}", job=job["id"])
        stored = job["results"]
        results: list[dict[str, Any]] = stored.parse() if isinstance(stored, RawJSON) else stored
        return results

    def wait_for(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it is final, or as it is after ``timeout`` seconds; the wait is in this process's
        inbox (no Redis connection is held while a request waits)."""
        if timeout <= 0:
            return self.jobs.get(job_id)
        waiter = self.inbox.expect(job_id)
        try:
            job = self.jobs.watch(job_id, self.inbox.key)
            if job is None:
                entry = waiter.wait(timeout)
                job = decode_final(entry) if entry is not None else self.jobs.get(job_id)
            return job
        finally:
            self.inbox.forget(job_id)

    def parse_timeout(self, raw: Any, ceiling: float) -> float | None:
        """A request's ``timeout``: seconds of scoring it allows, more than 0 and at most ``ceiling`` (the
        setting's); None when it asks for none (the model's limit, or the setting's, holds)."""
        if raw is None or raw == "":
            return None
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"timeout must be a number of seconds, not {raw!r}", field="timeout") from None
        if not 0 < seconds <= ceiling:
            raise BadRequest(f"timeout must be more than 0 and at most {ceiling:g} seconds", field="timeout",
                             maximum=ceiling)
        return seconds

    def parse_wait(self, raw: str | None) -> float:
        if raw is None or raw == "":
            return 0.0
        try:
            seconds = float(raw)
        except ValueError:
            raise BadRequest(f"wait must be a number of seconds, not {raw!r}", field="wait") from None
        if not 0 <= seconds <= self.settings.max_wait_seconds:
            raise BadRequest(f"wait must be between 0 and {self.settings.max_wait_seconds:g} seconds",
                             field="wait", maximum=self.settings.max_wait_seconds)
        return seconds


def _parse_int(text: str) -> int | float:
    """JSON integers as Python ints, except those no float can hold: infinity, which validation reports
    against its field (``int()`` of thousands of digits would raise, and slowly)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


def parse_json(raw: bytes) -> Any:
    """Parse a request body, naming where it breaks."""
    if not raw:
        raise BadRequest("the request body is empty; send a JSON object", field="body")
    try:
        return orjson.loads(raw)  # fast; anything it refuses gets the standard parser's verdict below
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_int=_parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply", field="body") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from None
