"""The job's log lines: one JSON object each (fields from ``extra=`` included), or text on a terminal."""

from __future__ import annotations

import io
import logging
import sys

import orjson

from sluice.core.logs import JsonLogFormatter, log_formatter


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("sluice.job")
    return logger.makeRecord(
        "sluice.job", logging.INFO, __file__, 1, "committed %s", ({"a": 1},), None, extra=extra
    )


def test_a_record_is_one_json_object_with_its_extra_fields() -> None:
    line = JsonLogFormatter().format(_record(rows=12, table="iot_readings", at=object()))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "sluice.job"
    assert entry["message"] == "committed {'a': 1}"
    assert (entry["rows"], entry["table"]) == (12, "iot_readings")
    assert entry["at"].startswith("<object object")  # what JSON cannot hold, as text
    assert entry["timestamp"].endswith("+00:00")


def test_an_exception_is_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    entry = orjson.loads(JsonLogFormatter().format(record))
    assert "ValueError: boom" in entry["exception"] and entry["message"] == "failed"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert isinstance(log_formatter("auto", io.StringIO()), JsonLogFormatter)
    assert not isinstance(log_formatter("auto", _Terminal()), JsonLogFormatter)
    assert not isinstance(log_formatter("text"), JsonLogFormatter)
    assert isinstance(log_formatter("json", _Terminal()), JsonLogFormatter)
