"""Structured logs for the long-running processes that are not Lambdas (the stream job, replay).

The edges log JSON through Powertools; the job does the same with the standard library:
``JsonLogFormatter`` writes one JSON object per line (``timestamp``, ``level``, ``logger``,
``message``, the fields passed as ``extra=``, and ``exception`` as one string), which CloudWatch
Logs Insights and MSF's logging read field by field. ``log_formatter("auto")`` picks JSON unless
the stream is a terminal, where a person reads plain lines.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

__all__ = ["JsonLogFormatter", "LogStyle", "log_formatter"]

LogStyle = Literal["auto", "text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
"""The attributes every ``LogRecord`` has: anything else on a record came from ``extra=``."""


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record; values JSON cannot hold are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def log_formatter(style: LogStyle, stream: IO[str] | None = None) -> logging.Formatter:
    """The formatter for ``style``; ``auto``: JSON unless ``stream`` is a terminal."""
    if style == "auto":
        isatty = getattr(stream, "isatty", None)
        style = "text" if callable(isatty) and isatty() else "json"
    return JsonLogFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT)
