"""Versioned event contracts: what travels between the edges, the stream job and the tables.

In: nothing (this module only defines types).
Out: pydantic v2 models for the wire envelope, the three normalized source records and the dead letter.

Wire encoding (documented in docs/ARCHITECTURE.md): one UTF-8 JSON object per Kinesis user record,
an ``Envelope`` whose ``payload`` is the normalized record of its source. Several user records may be
packed into one Kinesis record with KPL aggregation; consumers de-aggregate before decoding.

Event times are bounded (``TimeHorizon``): from ``min_event_time`` (default 1970-01-01) to
``max_future_seconds`` (default one day) after a reference time (the edge's clock, the record's
Kinesis arrival in the job), so a device with a broken clock yields ``invalid_timestamp`` dead letters,
never a row that overflows window arithmetic later. Epoch numbers take their unit from their magnitude
(``epoch_to_datetime``). Identifiers that become partition keys or lookup keys (device id, client IP,
feed item id) refuse control characters; floats must be finite; integers fit the tables' 64 bits.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    model_serializer,
)

__all__ = [
    "CORRELATION_ID_MAX",
    "DeadLetter",
    "Envelope",
    "ErrorType",
    "FeedItem",
    "FeedValue",
    "GeoInfo",
    "GeoPoint",
    "IotReading",
    "Source",
    "Stage",
    "TimeHorizon",
    "WebAccessLog",
    "control_character_problem",
    "correlation_id",
    "epoch_to_datetime",
    "event_time_bounds",
    "make_event_id",
]

SCHEMA_VERSION = 1
"""Version of every contract below; bumped on any incompatible change."""


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00, 9999-12-31T23:59:59-14:00
        raise ValueError(f"{value.isoformat()} is outside years 1-9999 in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_FUTURE_SECONDS = 86_400
"""Default horizon: how far past its reference time an event time may be (clock skew, time zones)."""
MIN_EVENT_TIME = EPOCH
"""Default earliest event time: a device reporting 1970 has an unset clock, not old data."""
MAX_FUTURE_SECONDS_LIMIT = 100 * 366 * 86_400
"""The largest ``max_future_seconds`` accepted: now + 100 years stays far from year 9999."""
_SMALLEST_MIN_EVENT_TIME = datetime(1, 1, 2, tzinfo=UTC)
"""A day above the smallest datetime: window arithmetic (windows of up to a day) cannot underflow."""

_HORIZON_CONTEXT = "sluice.event_time_bounds"


class _Bounds(NamedTuple):
    earliest: datetime
    latest: datetime
    reference: datetime
    max_future_seconds: int


@dataclass(frozen=True, slots=True)
class TimeHorizon:
    """Which event times a record may carry: from ``min_event_time`` to ``max_future_seconds`` after a
    reference time; anything else is ``invalid_timestamp``.

    The reference is the time of ingestion: the edge's clock, the record's Kinesis arrival in the job
    (so a replay judges every record as the first run did). The lower bound is absolute rather than
    relative, so old data (re-drives, backfills, replays) is never refused for its age; lateness is
    the window stage's business (``too_late``).
    """

    max_future_seconds: int = MAX_FUTURE_SECONDS
    min_event_time: datetime = MIN_EVENT_TIME

    def __post_init__(self) -> None:
        if not 0 <= self.max_future_seconds <= MAX_FUTURE_SECONDS_LIMIT:
            raise ValueError(f"max_future_seconds must be within 0..{MAX_FUTURE_SECONDS_LIMIT}")
        earliest = _as_utc(self.min_event_time)
        if earliest < _SMALLEST_MIN_EVENT_TIME:
            raise ValueError(
                f"min_event_time must be {_SMALLEST_MIN_EVENT_TIME.isoformat()} or later"
            )
        object.__setattr__(self, "min_event_time", earliest)

    def context(self, reference: datetime | None = None) -> dict[str, Any]:
        """The validation context that makes the contracts apply this horizon around ``reference``
        (default: now): ``IotReading.model_validate(data, context=horizon.context(now))``."""
        now = _as_utc(reference) if reference is not None else datetime.now(UTC)
        latest = now + timedelta(seconds=self.max_future_seconds)
        bounds = _Bounds(self.min_event_time, latest, now, self.max_future_seconds)
        return {_HORIZON_CONTEXT: bounds}


DEFAULT_HORIZON = TimeHorizon()


def _utc_within_horizon(value: datetime, info: ValidationInfo) -> datetime:
    """``_as_utc``, then the horizon of the validation context (default: ``DEFAULT_HORIZON`` around
    now). One validator rather than two: each costs a call per record on the hot path."""
    value = _as_utc(value)
    bounds = _bounds_of(info.context)
    if value > bounds.latest:
        raise ValueError(
            f"{value.isoformat()} is more than {bounds.max_future_seconds} s after the time of "
            f"ingestion ({bounds.reference.isoformat(timespec='seconds')}; a wrong clock?)"
        )
    if value < bounds.earliest:
        raise ValueError(
            f"{value.isoformat()} is before the earliest accepted event time "
            f"{bounds.earliest.isoformat()}"
        )
    return value


def _bounds_of(context: Any) -> _Bounds:
    found: _Bounds | None = context.get(_HORIZON_CONTEXT) if type(context) is dict else None
    return found or DEFAULT_HORIZON.context()[_HORIZON_CONTEXT]


def event_time_bounds(context: Any) -> tuple[datetime, datetime]:
    """(earliest, latest) event time the contracts accept under a validation ``context``
    (``TimeHorizon.context``; anything else: ``DEFAULT_HORIZON`` around now), both inclusive: for
    bulk paths that check a batch's times once instead of validating each record."""
    bounds = _bounds_of(context)
    return bounds.earliest, bounds.latest


# Unit by magnitude: each unit but seconds starts at 2001-09-09 (1e9 s); see ``epoch_to_datetime``.
_MS_FROM, _US_FROM, _NS_FROM, _NO_UNIT_FROM = 10**12, 10**15, 10**18, 10**21
_EPOCH_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def epoch_to_datetime(value: float) -> datetime:
    """An epoch number as a UTC datetime, its unit decided by its magnitude (absolute value):

    ======================  =============  ==============================================
    magnitude               unit           positive values cover
    ======================  =============  ==============================================
    below 1e12              seconds        1970 to year 33658 (the horizon ends sooner)
    1e12 to below 1e15      milliseconds   2001-09-09T01:46:40Z to year 33658
    1e15 to below 1e18      microseconds   2001-09-09T01:46:40Z to year 33658
    1e18 to below 1e21      nanoseconds    2001-09-09T01:46:40Z to year 33658
    ======================  =============  ==============================================

    So seconds are never taken for milliseconds: ``253402300799`` is 9999-12-31T23:59:59Z (and then
    refused by the horizon), not a day of 1978. The price is that milliseconds before 2001-09-09
    read as seconds, far in the future, and are refused rather than misread. Raises ``ValueError``
    for a non-finite number, a magnitude of 1e21 or more, or a time outside years 1-9999.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"epoch time {value!r} is not a finite number")
    magnitude = abs(value)
    if magnitude < _MS_FROM:
        per_second, unit = 1, "seconds"
    elif magnitude < _US_FROM:
        per_second, unit = 1_000, "milliseconds"
    elif magnitude < _NS_FROM:
        per_second, unit = 1_000_000, "microseconds"
    elif magnitude < _NO_UNIT_FROM:
        per_second, unit = 1_000_000_000, "nanoseconds"
    else:
        raise ValueError(f"epoch time {value!r} is too large in any unit (s, ms, us, ns)")
    if isinstance(value, int):
        micros = value * 1_000_000 // per_second
    else:
        micros = round(value * (1_000_000 / per_second))
    try:
        return EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"epoch {unit} {value!r} is outside years 1-9999") from None


def _epoch_number(value: Any) -> Any:
    """Numbers and numeric strings become datetimes by ``epoch_to_datetime``; the rest is left to
    pydantic's datetime parsing (ISO-8601). Exact type checks: this runs for every event time."""
    kind = type(value)
    if kind is str:
        if value[-1:].isdigit() and _EPOCH_TEXT.fullmatch(value):  # not "...Z", not "...+01:00"
            if len(value) > 40:  # int() of thousands of digits is refused by Python itself
                raise ValueError(f"epoch time of {len(value)} characters is too large in any unit")
            return epoch_to_datetime(float(value) if "." in value else int(value))
        return value
    if kind is int or kind is float:
        return epoch_to_datetime(value)
    return value  # a datetime; a bool or anything else pydantic refuses


EventTime = Annotated[datetime, BeforeValidator(_epoch_number), AfterValidator(_utc_within_horizon)]
"""An event time: epoch (unit by magnitude) or ISO-8601, in UTC, within the ``TimeHorizon``."""

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""The pattern of ``PrintableText``; ``control_character_problem`` says what is wrong with a value
that does not match it (``sluice.core.deadletters.describe_validation_error`` uses it)."""
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_character_problem(value: str) -> str | None:
    """``control character U+0000 at index 1 is not allowed``, or ``None`` for a printable value."""
    found = _CONTROL_CHARACTER.search(value)
    if found is None:
        return None
    return f"control character U+{ord(found.group()):04X} at index {found.start()} is not allowed"


PrintableText = Annotated[str, StringConstraints(pattern=NO_CONTROL_CHARACTERS)]
"""Text without control characters (C0, DEL, C1): for identifiers used as keys (partition keys,
GeoIP lookups, table partitions), where a NUL or a line break is never meant. A pattern, checked by
pydantic-core itself: no Python call per record."""

MAX_INT64 = 2**63 - 1


class Source(StrEnum):
    """The three kinds of input Sluice ingests."""

    IOT = "iot"
    WEBLOG = "weblog"
    FEED = "feed"


class Stage(StrEnum):
    """Where in the pipeline a record was handled: dead letters say it, counters are named by it."""

    EDGE_IOT = "edge.iot"
    """The IoT HTTP edge (request bodies)."""
    EDGE_LOGS = "edge.logs"
    """The access-log edge (S3 objects, CloudWatch Logs subscriptions)."""
    EDGE_FEED = "edge.feed"
    """The feed poller (polled JSON documents)."""
    EDGE_PUBLISH = "edge.publish"
    """Delivery to Kinesis (records the stream would not take)."""
    READ = "read"
    """The job's Kinesis source."""
    DECODE = "decode"
    """Wire envelopes decoded from Kinesis user records."""
    PARSE = "parse"
    """Raw input parsed and validated against the contracts."""
    ENRICH = "enrich"
    """GeoIP enrichment."""
    FILTER = "filter"
    """Filter rules (drops are counted, never dead-lettered)."""
    WINDOW = "window"
    """Event-time windows (too-late events)."""
    WRITE = "write"
    """The Iceberg writer."""


def make_event_id(source: Source | str, *identity: object) -> str:
    """A stable, deterministic id: the same identity always yields the same id.

    ``identity`` is what makes an event unique for its source (device + time + message id,
    log file + line number, feed + item id + updated time), so a re-delivered event gets the
    same id and can be de-duplicated downstream.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(source).encode())
    for part in identity:
        digest.update(b"\x1f")
        text = str(part)
        try:
            digest.update(text.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
            digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class _Contract(BaseModel):
    # NaN and infinities have no JSON form (they would travel as null) and poison aggregates.
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, allow_inf_nan=False
    )


class GeoPoint(_Contract):
    """A WGS84 position."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class IotReading(_Contract):
    """One normalized device reading. Metric values are floats; descriptive values are strings."""

    device_id: PrintableText = Field(min_length=1, max_length=256)
    event_time: EventTime
    metrics: dict[str, float] = Field(default_factory=dict)
    attributes: dict[str, str] = Field(default_factory=dict)
    location: GeoPoint | None = None
    message_id: str | None = Field(
        default=None, description="Device or broker message id, if sent."
    )
    flags: list[str] = Field(default_factory=list, description="Labels set by filters.")


class GeoInfo(_Contract):
    """The result of a GeoIP lookup. ``status`` says why fields are empty, never an exception."""

    status: Literal["found", "not_found", "private", "reserved", "invalid", "lookup_error"]
    country_iso: str | None = None
    country_name: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    asn: int | None = None
    as_org: str | None = None


class WebAccessLog(_Contract):
    """One normalized web server access-log line. A ``-`` in the log becomes ``None``."""

    client_ip: PrintableText | None
    remote_user: str | None = None
    event_time: EventTime
    request: str | None = Field(default=None, description="The raw request line, as logged.")
    method: str | None = None
    path: str | None = None
    query: str | None = None
    protocol: str | None = None
    status: int = Field(ge=0, le=999)
    bytes_sent: int | None = Field(default=None, ge=0, le=MAX_INT64)
    referer: str | None = None
    user_agent: str | None = None
    forwarded_for: list[str] = Field(default_factory=list)
    request_time: float | None = Field(default=None, ge=0, description="Seconds, when logged.")
    vhost: str | None = None
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="Fields of a custom log_format with no column of their own.",
    )
    flags: list[str] = Field(default_factory=list, description="Labels set by filters, e.g. 'bot'.")
    geo: GeoInfo | None = None
    # Added in schema version 1 without a bump, left out of the wire form while unset
    # (``_omit_unset_new_fields``), so a record that does not use them travels as before.
    invalid_utf8: bool = Field(
        default=False,
        description="Some logged bytes were not UTF-8 (nginx logs what clients send); they read as "
        "U+FFFD in the decoded fields. ``request`` keeps them as \\xNN.",
    )
    response_bytes: int | None = Field(
        default=None, ge=0, le=MAX_INT64, description="$bytes_sent: bytes sent, headers included."
    )
    request_length: int | None = Field(
        default=None, ge=0, le=MAX_INT64, description="$request_length: bytes received."
    )
    server_port: int | None = Field(default=None, ge=0, le=65535, description="$server_port.")
    ssl_protocol: str | None = Field(default=None, description="$ssl_protocol, e.g. TLSv1.3.")
    upstream_addr: list[str | None] = Field(
        default_factory=list, description="$upstream_addr: one entry per upstream tried."
    )
    upstream_status: list[int | None] = Field(
        default_factory=list, description="$upstream_status: one entry per upstream tried."
    )
    upstream_response_time: list[float | None] = Field(
        default_factory=list, description="$upstream_response_time, seconds, per upstream tried."
    )
    upstream_connect_time: list[float | None] = Field(
        default_factory=list, description="$upstream_connect_time, seconds, per upstream tried."
    )
    upstream_header_time: list[float | None] = Field(
        default_factory=list, description="$upstream_header_time, seconds, per upstream tried."
    )

    @model_serializer(mode="wrap")
    def _omit_unset_new_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, unset in _WEB_OPTIONAL_DEFAULTS:
            if data.get(name, unset) == unset:
                data.pop(name, None)
        return data


_WEB_OPTIONAL_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("invalid_utf8", False),
    ("response_bytes", None),
    ("request_length", None),
    ("server_port", None),
    ("ssl_protocol", None),
    ("upstream_addr", []),
    ("upstream_status", []),
    ("upstream_response_time", []),
    ("upstream_connect_time", []),
    ("upstream_header_time", []),
)
"""The fields ``WebAccessLog`` gained within schema version 1, with their unset values."""


FeedValue = str | int | float | bool | None


class FeedItem(_Contract):
    """One item of a polled JSON API (an earthquake of the USGS feed, a measurement, ...)."""

    feed: str = Field(min_length=1)
    item_id: PrintableText = Field(min_length=1)
    event_time: EventTime
    updated_time: EventTime | None = None
    location: GeoPoint | None = None
    fields: dict[str, FeedValue] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list, description="Labels set by filters.")


CORRELATION_ID_MAX = 128
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9._:/=+-]+$"
_CORRELATION_ID = re.compile(CORRELATION_ID_PATTERN)


def correlation_id(candidate: object) -> str | None:
    """``candidate`` if it can be a correlation id (1-128 of ``A-Z a-z 0-9 . _ : / = + -``), else None.

    A correlation id names the edge request that brought an event in: the HTTP API's request id
    (or the client's own ``x-correlation-id``), or the Lambda request id of a log or poll run. It
    travels in the ``Envelope`` to a column of every event table and of ``dead_letters``."""
    if not isinstance(candidate, str) or len(candidate) > CORRELATION_ID_MAX:
        return None
    return candidate if _CORRELATION_ID.match(candidate) else None


class Envelope(_Contract):
    """What one Kinesis user record carries: routing and de-duplication data around a payload.

    ``kind`` says what the payload is: a normalized record of ``source``, or a ``DeadLetter`` the edge
    produced (edge rejections travel the same stream, so one sink collects every dead letter).

    ``correlation_id`` (optional, added without a bump, left out of the wire form when unset like
    ``redrive_of``): the edge request that brought the event in (``correlation_id``).

    ``redrive_of`` (optional, added in schema version 1 without a bump) is set only on envelopes
    re-submitted by ``sluice dead-letters --redrive``: the ``dead_letter_id`` they re-drive. The job
    never judges such an event ``too_late`` (it updates its old window), and its table writer lands
    it at most once per ``event_id`` (see ``sluice.tables.redrive``). It is left out of the wire form when
    unset, so every other envelope is byte-for-byte what it was; a consumer older than this field
    refuses re-driven envelopes (``extra="forbid"``), so deploy the job before re-driving.
    """

    source: Source
    kind: Literal["record", "dead_letter"] = "record"
    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=128)
    ingest_time: UtcDatetime
    partition_key: str = Field(min_length=1, max_length=256)
    payload: dict[str, Any]
    redrive_of: str | None = Field(default=None, min_length=1, max_length=128)
    correlation_id: str | None = Field(
        default=None, min_length=1, max_length=CORRELATION_ID_MAX, pattern=CORRELATION_ID_PATTERN
    )

    @model_serializer(mode="wrap")
    def _omit_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in ("redrive_of", "correlation_id"):
            if data.get(name, "") is None:
                del data[name]
        return data


class ErrorType(StrEnum):
    """Why an input was rejected. Dead-letter counters and queries group by these."""

    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    UNPARSEABLE_LINE = "unparseable_line"
    MISSING_FIELD = "missing_field"
    INVALID_TIMESTAMP = "invalid_timestamp"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"
    TOO_LATE = "too_late"
    DELIVERY_FAILED = "delivery_failed"
    TOO_MANY_ERRORS = "too_many_errors"
    """Rejections of one request or batch beyond the dead-letter cap, summarized in one letter."""


class DeadLetter(_Contract):
    """A rejected input, kept whole enough to understand and re-drive it."""

    dead_letter_id: str
    source: Source
    stage: Stage = Field(
        description="Where it was rejected (``Stage``: 'parse', 'window', 'edge.iot'...)."
    )
    error_type: ErrorType
    message: str
    raw: str = Field(description="The original input, truncated to a bounded size.")
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_size: int = Field(
        ge=0, description="Size in bytes of the original input before truncation."
    )
    raw_truncated: bool = False
    event_time: UtcDatetime | None = None
    first_seen: UtcDatetime
    pipeline_version: str
    correlation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=CORRELATION_ID_MAX,
        pattern=CORRELATION_ID_PATTERN,
        description="The edge request that brought the input in, when known (``correlation_id``).",
    )

    @model_serializer(mode="wrap")
    def _omit_unset_correlation_id(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out when unset, so a letter made without one is byte-for-byte what it was.
        data: dict[str, Any] = handler(self)
        if data.get("correlation_id", "") is None:
            del data["correlation_id"]
        return data
