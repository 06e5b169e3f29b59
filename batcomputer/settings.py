"""The one settings object, read from ``BATCOMPUTER_*`` environment variables and validated at start-up."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from batcomputer.errors import ConfigurationError
from batcomputer.jobqueue.keyspace import DEFAULT_ALIAS

PREFIX = "BATCOMPUTER_"


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must be greater than zero")
    return value


def _float(name: str, raw: str, allow_zero: bool) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} is not a number") from None
    if not (value >= 0 if allow_zero else value > 0):
        limit = "must not be negative" if allow_zero else "must be greater than zero"
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} {limit}")
    return value


def _positive_float(name: str, raw: str) -> float:
    return _float(name, raw, allow_zero=False)


def _non_negative_float(name: str, raw: str) -> float:
    return _float(name, raw, allow_zero=True)


def _fraction(name: str, raw: str) -> float:
    value = _float(name, raw, allow_zero=False)
    if value > 1:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} is a fraction: greater than 0, at most 1")
    return value


def _json_object(name: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{PREFIX}{name.upper()} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{PREFIX}{name.upper()} must be a JSON object")
    return value


def _count(name: str, raw: str) -> int:
    """A number of processes: 0 means one per CPU core."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} is not an integer") from None
    if value < 0:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must not be negative (0: one per core)")
    return value


def _niceness(name: str, raw: str) -> int:
    """A niceness to add, as ``nice`` takes it: 0 (none) to 19 (run only when nothing else wants the CPU)."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} is not an integer") from None
    if not 0 <= value <= 19:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must be from 0 to 19")
    return value


def per_core(count: int) -> int:
    """``count`` processes, or one per CPU core for 0."""
    return count or os.cpu_count() or 1


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigurationError(f"{PREFIX}{name.upper()} must not be empty")
    return raw.strip()


def _optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


PROFILES = ("local", "production")


def _profile(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in PROFILES:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must be one of {', '.join(PROFILES)}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must be true or false")
    return value in ("1", "true", "yes", "on")


def _port(name: str, raw: str) -> int:
    if not (raw.strip().isdigit() and 0 <= int(raw) <= 65535):
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must be a port number (0: none)")
    return int(raw)


def _log_format(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} must be text or json")
    return value


def _optional_list(name: str, raw: str) -> str:
    return ",".join(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything configurable; every field maps to ``BATCOMPUTER_<FIELD NAME IN CAPITALS>``."""

    profile: str = field(default="local", metadata={"parse": _profile,
        "help": "local: no authentication, loopback only (what `make up` runs); production: every API call "
                "needs a key (`batcomputer keys create`), and the gateway refuses to start without one"})
    keys_file: str | None = field(default=None, metadata={"parse": _optional_text,
        "help": "Hashed API keys (`batcomputer keys create` writes it); unset: keys.json in the state folder"})
    api_keys: dict[str, Any] = field(default_factory=dict, metadata={"parse": _json_object,
        "help": "More hashed keys as JSON {name: {\"scope\", \"sha256\"}} (e.g. from a Kubernetes Secret)"})
    rate_limit_per_minute: int = field(default=1200, metadata={"parse": _positive_int,
        "help": "Requests one API key may make per minute (production profile); past it: 429 with Retry-After"})
    registry: str = field(default="var/registry", metadata={"parse": _text,
        "help": "Model registry: a local folder or an fsspec URL (e.g. abfs://models)"})
    registry_options: dict[str, Any] = field(default_factory=dict, metadata={"parse": _json_object,
        "help": "JSON object of fsspec storage options for the registry URL"})
    state_dir: str = field(default="var", metadata={"parse": _text,
        "help": "Where `batcomputer up` keeps the Redis it starts (append-only file, log)"})
    data_dir: str = field(default="data/raw", metadata={"parse": _text,
        "help": "Where `batcomputer data fetch` puts datasets (git-ignored)"})
    redis_url: str | None = field(default=None, metadata={"parse": _optional_text,
        "help": "Redis for queues and jobs; unset: `up` finds or starts one"})
    key_prefix: str = field(default="bc:", metadata={"parse": _text,
        "help": "Prefix of every Redis key Batcomputer writes"})
    default_model: str = field(default="crime", metadata={"parse": _text,
        "help": "Model served by the seed-compatible /api/predict"})
    default_alias: str = field(default=DEFAULT_ALIAS, metadata={"parse": _text,
        "help": "Alias a job is pinned to when it names neither version nor alias"})
    api_host: str = field(default="127.0.0.1", metadata={"parse": _text, "help": "Gateway bind address"})
    api_port: int = field(default=8000, metadata={"parse": _positive_int, "help": "Gateway port"})
    max_records: int = field(default=10_000, metadata={"parse": _positive_int,
        "help": "Most records accepted in one request"})
    max_body_bytes: int = field(default=8 * 1024 * 1024, metadata={"parse": _positive_int,
        "help": "Largest request body accepted, in bytes"})
    max_wait_seconds: float = field(default=30.0, metadata={"parse": _positive_float,
        "help": "Upper bound of ?wait= on job submission"})
    predict_timeout_seconds: float = field(default=10.0, metadata={"parse": _positive_float,
        "help": "How long /api/predict waits for a worker before answering 503"})
    job_ttl_seconds: int = field(default=86_400, metadata={"parse": _positive_int,
        "help": "How long job records and results are kept in Redis"})
    visibility_timeout_seconds: int = field(default=30, metadata={"parse": _positive_int,
        "help": "A message a worker took but has not acknowledged is delivered again after this long (a "
                "duplicate of a job still held by a live worker is recognised and skipped)"})
    lease_seconds: int = field(default=15, metadata={"parse": _positive_int,
        "help": "A worker that has not renewed its lease for this long is presumed lost: its running jobs "
                "are sent again (renewed every third of it while the worker lives, however long a job runs)"})
    max_attempts: int = field(default=3, metadata={"parse": _positive_int,
        "help": "Deliveries of one job before it is declared dead"})
    timeout_records_seconds: float = field(default=30.0, metadata={"parse": _positive_float,
        "help": "Time limit of scoring a micro-batch of single records or one job's list (a model's spec may "
                "set its own; ?timeout= may ask for less); past it the records are scored again apart, and "
                "those that still hang fail with code timeout"})
    timeout_chunk_seconds: float = field(default=600.0, metadata={"parse": _positive_float,
        "help": "Most time scoring one chunk of a batch file may take; a chunk gets less when it is small "
                "(BATCOMPUTER_TIMEOUT_FLOOR_SECONDS plus BATCOMPUTER_TIMEOUT_ROW_MS per row), and one that "
                "times out is split until only the hanging rows are rejected (code timeout)"})
    timeout_stream_seconds: float = field(default=30.0, metadata={"parse": _positive_float,
        "help": "Time limit of scoring one micro-batch of stream entries; entries that hang alone are "
                "dead-lettered with code timeout"})
    timeout_floor_seconds: float = field(default=2.0, metadata={"parse": _positive_float,
        "help": "Least time any piece of split work gets (one record scores in about a millisecond)"})
    timeout_row_ms: float = field(default=0.25, metadata={"parse": _positive_float,
        "help": "Time allowed per row on top of the floor when a chunk or a piece is timed (a row costs "
                "microseconds in a vectorised call)"})
    timeout_grace_seconds: float = field(default=10.0, metadata={"parse": _positive_float,
        "help": "Past a time limit by this long, scoring that could not be stopped (stuck in C code, or blocked "
                "outside the main thread) makes its process exit and be replaced"})
    guard_jobs: int = field(default=200, metadata={"parse": _positive_int,
        "help": "Guarded promotion: a move of production is watched for this many of the new version's jobs "
                "(or BATCOMPUTER_GUARD_MINUTES); a tripped guard moves it back"})
    guard_minutes: float = field(default=30.0, metadata={"parse": _positive_float,
        "help": "Guarded promotion: the longest a move of production is watched"})
    explain_niceness: int = field(default=10, metadata={"parse": _niceness,
        "help": "Niceness added to the child process that computes explanations, so that explained requests "
                "take the CPU that scoring leaves (0 to 19)"})
    batch_max_records: int = field(default=256, metadata={"parse": _positive_int,
        "help": "Most single records a worker scores in one vectorised call"})
    batch_window_ms: float = field(default=0.0, metadata={"parse": _non_negative_float,
        "help": "Extra wait for companions before scoring a batch (0: score what is waiting, no added latency)"})
    worker_concurrency: int = field(default=0, metadata={"parse": _count,
        "help": "Processes of a bulk worker (prefork pool; 0: one per CPU core)"})
    storage_roots: str = field(default="var/batches", metadata={"parse": _text,
        "help": "Where batch inputs and outputs may live, comma-separated: local folders or fsspec URLs "
                "(e.g. abfs://container/batches); the first holds uploads and default outputs"})
    storage_options: dict[str, Any] = field(default_factory=dict, metadata={"parse": _json_object,
        "help": "fsspec options for remote storage roots, as JSON (e.g. an Azure connection string)"})
    batch_chunk_rows: int = field(default=200_000, metadata={"parse": _positive_int,
        "help": "Rows per chunk of a batch file: a chunk is one leased unit of work that any bulk worker scores "
                "(about a second of work; a bulk worker's memory grows with it, not with the file)"})
    batch_ttl_seconds: int = field(default=86_400, metadata={"parse": _positive_int,
        "help": "How long uploaded files and the outputs Batcomputer names are kept before workers delete them"})
    max_upload_bytes: int = field(default=4 * 1024**3, metadata={"parse": _positive_int,
        "help": "Largest Parquet file accepted as a request body, in bytes"})
    cors_origins: str = field(default="", metadata={"parse": _optional_list,
        "help": "Web origins (scheme://host[:port], comma-separated) whose pages may call the API from a browser; "
                "never with credentials. Other origins may not change anything"})
    webhook_hosts: str = field(default="", metadata={"parse": _optional_list,
        "help": "Hosts a batch's callback_url may name, comma-separated (host or host:port); loopback and "
                "private addresses only when listed by address; empty: no callbacks"})
    webhook_secret: str | None = field(default=None, repr=False, metadata={"parse": _optional_text,
        "help": "Key of the HMAC-SHA256 signature on webhook deliveries (needed for callback_url)"})
    api_key: str | None = field(default=None, repr=False, metadata={"parse": _optional_text,
        "help": "The API key the CLI's `score` and the score-batch flow send to a gateway in the production "
                "profile (a Secret)"})
    api_url: str = field(default="http://127.0.0.1:8000", metadata={"parse": _text,
        "help": "The gateway `batcomputer score` submits to"})
    prefect_api_url: str | None = field(default=None, metadata={"parse": _optional_text,
        "help": "Prefect server API the gateway triggers retraining on (`up` starts one and sets it)"})
    prefect: bool = field(default=True, metadata={"parse": _flag,
        "help": "Whether `batcomputer up` starts a Prefect server and serves the flows"})
    stream_batch: int = field(default=256, metadata={"parse": _positive_int,
        "help": "Most stream entries a consumer reads and scores in one micro-batch"})
    stream_claim_idle_seconds: float = field(default=30.0, metadata={"parse": _positive_float,
        "help": "A stream entry read but not acknowledged for this long is claimed by another consumer (its "
                "consumer is presumed lost; delivered more than BATCOMPUTER_MAX_ATTEMPTS times, it is dead-lettered)"})
    stream_max_backlog: int = field(default=100_000, metadata={"parse": _positive_int,
        "help": "Unscored entries a model's input stream may hold; past it POST .../stream answers 429"})
    stream_maxlen: int = field(default=100_000, metadata={"parse": _positive_int,
        "help": "About how many entries the output and dead-letter streams keep (older ones are trimmed)"})
    record_workers: int = field(default=0, metadata={"parse": _count,
        "help": "Record worker processes `batcomputer up` starts (0: one per CPU core; each scores on one core)"})
    api_workers: int = field(default=0, metadata={"parse": _count,
        "help": "Gateway processes (0: one per CPU core)"})
    api_connections: int = field(default=2000, metadata={"parse": _positive_int,
        "help": "Open connections per gateway process (waiting and slow clients included; each costs a "
                "greenlet, not a thread)"})
    record_threads: int = field(default=64, metadata={"parse": _positive_int,
        "help": "Threads of a record worker: single records in flight, scored together in micro-batches"})
    bulk_threshold_records: int = field(default=100, metadata={"parse": _positive_int,
        "help": "Requests with more records than this go to the bulk queue"})
    worker_metrics_port: int = field(default=9100, metadata={"parse": _port,
        "help": "Port of a worker's (or stream consumer's) Prometheus /metrics (0: none)"})
    metrics_host: str = field(default="127.0.0.1", metadata={"parse": _text,
        "help": "Bind address of the workers' and stream consumers' /metrics (and of Flower under `up`); "
                "0.0.0.0 in containers, where Prometheus and the kubelet reach them"})
    capture_root: str | None = field(default=None, metadata={"parse": _optional_text,
        "help": "Where scored records are captured as Parquet (a folder or fsspec URL, e.g. abfs://capture); "
                "unset: no capture"})
    capture_options: dict[str, Any] = field(default_factory=dict, metadata={"parse": _json_object,
        "help": "JSON object of fsspec storage options for the capture root"})
    capture_rates: str = field(default="job=1,predict=1,stream=1,batch=0.01", metadata={"parse": _text,
        "help": "Fraction of scored records captured per source (job, predict, stream, batch)"})
    capture_roll_mb: int = field(default=64, metadata={"parse": _positive_int,
        "help": "A capture file is written once a process holds this many MB of a partition's rows"})
    capture_roll_seconds: float = field(default=60.0, metadata={"parse": _positive_float,
        "help": "... or once its oldest row is this many seconds old (what a killed process can lose)"})
    capture_retention_days: float = field(default=30.0, metadata={"parse": _positive_float,
        "help": "Captured partitions older than this many days are deleted by the workers' sweeper"})
    drift_cooldown_seconds: float = field(default=86_400.0, metadata={"parse": _positive_float,
        "help": "After the monitor requests a retrain for major drift, it requests none for this long"})
    flower_password: str | None = field(default=None, metadata={"parse": _optional_text,
        "help": "Password of Flower's basic auth (user admin) under `up --flower` and compose's flower profile; "
                "`up` makes one up and prints it when unset"})
    log_format: str = field(default="text", metadata={"parse": _log_format,
        "help": "Log lines as text or json (one JSON object per line, with job id and model version)"})
    max_queue_depth: int = field(default=50_000, metadata={"parse": _positive_int,
        "help": "Unfinished jobs a queue may hold (chunks of files count); past it submissions get 429 with a "
                "Retry-After from the measured drain rate"})
    key_share: float = field(default=0.5, metadata={"parse": _fraction,
        "help": "With API keys: the fraction of a queue's depth limit one key's unfinished jobs may take"})
    key_reserve: float = field(default=0.05, metadata={"parse": _fraction,
        "help": "With API keys: the fraction of a queue's depth limit every key may hold even when the queue "
                "is full"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default: the process environment), then apply overrides."""
        env = os.environ if environ is None else environ
        known = {f"{PREFIX}{f.name.upper()}" for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"{PREFIX}{f.name.upper()}")
            if raw is not None:
                parse: Callable[[str, str], Any] = f.metadata["parse"]
                values[f.name] = parse(f.name, raw)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every setting: the README's configuration table."""
        rows = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            rows.append((f"{PREFIX}{f.name.upper()}", repr(default), f.metadata["help"]))
        return rows
