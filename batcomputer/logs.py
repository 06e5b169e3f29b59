"""Log lines: text for people, or one JSON object per line for log collectors (with job id and model version)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from batcomputer.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a call can attach with ``extra=``; a JSON line carries those present.
CONTEXT = ("job_id", "model", "version", "queue", "holder", "state", "attempts", "count")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the context attributes, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in CONTEXT:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings, level: int | str = "INFO", logger: str = "") -> None:
    """Send ``logger``'s records (the root's by default) to stderr in ``BATCOMPUTER_LOG_FORMAT``."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings))
    target = logging.getLogger(logger)
    target.handlers[:] = [handler]
    target.setLevel(level)
