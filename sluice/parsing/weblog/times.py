"""nginx times: ``$time_local`` (with a cache for the consecutive lines that share it), ``$time_iso8601``
and ``$msec``, all to aware UTC datetimes. A time that cannot be read is ``invalid_timestamp``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from sluice.core.contracts import ErrorType
from sluice.core.errors import RecordRejected

__all__ = ["parse_clf_time", "parse_time"]

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_CLF_TIME = re.compile(
    r"(\d{2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})", re.ASCII
)
_TZ_CACHE: dict[str, timezone] = {}
_CLF_CACHE: dict[str, datetime] = {}
_CLF_CACHE_SIZE = 4096
_MINUTE_CACHE: dict[str, datetime] = {}
"""``22/Jan/2019:03:56 +0330`` (a valid time without its seconds) -> that minute in UTC."""
_SECONDS = tuple(timedelta(seconds=s) for s in range(60))


def parse_clf_time(text: str) -> datetime:
    """``22/Jan/2019:03:56:14 +0330`` -> aware UTC datetime.

    Consecutive lines mostly share their second, and nearly always their minute: parsed times and
    minutes are cached (bounded), so a new second costs an addition, not a parse.
    """
    cached = _CLF_CACHE.get(text)
    if cached is not None:
        return cached
    # A key equal to that of a valid time means the same 26-character shape; only the seconds are new.
    minute = _MINUTE_CACHE.get(text[:17] + text[20:])
    second = text[18:20]
    if (
        minute is not None
        and text[17] == ":"
        and second.isascii()
        and second.isdigit()
        and second < "60"
    ):
        parsed = minute + _SECONDS[int(second)]
    else:
        parsed = _parse_clf_time(text)
        if len(_MINUTE_CACHE) >= _CLF_CACHE_SIZE:
            _MINUTE_CACHE.clear()
        _MINUTE_CACHE[text[:17] + text[20:]] = parsed - _SECONDS[parsed.second]
    if len(_CLF_CACHE) >= _CLF_CACHE_SIZE:
        _CLF_CACHE.clear()
    _CLF_CACHE[text] = parsed
    return parsed


def _parse_clf_time(text: str) -> datetime:
    match = _CLF_TIME.fullmatch(text)
    month = _MONTHS.get(match.group(2)) if match is not None else None
    if match is None or month is None:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"not an nginx time_local: {text!r}")
    day, _, year, hh, mm, ss, sign, oh, om = match.groups()
    offset = text[-5:]
    tz = _TZ_CACHE.get(offset)
    if tz is None:
        if int(oh) > 23 or int(om) > 59:
            raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: bad UTC offset")
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = _TZ_CACHE.setdefault(offset, timezone(-delta if sign == "-" else delta))
    try:
        local = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz)
        return local.astimezone(UTC)
    except (ValueError, OverflowError) as err:  # day 31 of a 30-day month; year 1 or 9999 off UTC
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: {err}") from None


def parse_time(text: str, kind: str) -> datetime:
    """A time of ``kind`` ``clf`` ($time_local), ``iso`` ($time_iso8601) or ``epoch`` ($msec)."""
    try:
        if kind == "clf":
            return parse_clf_time(text)
        if kind == "iso":
            parsed = datetime.fromisoformat(text)
            # Without an offset the time is taken as UTC (as the contract does), never as this host's zone.
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError) as err:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: {err}") from None
