"""Versioned event contracts: what travels between the edges, the stream job and the tables.

In: nothing (this module only defines types).
Out: pydantic v2 models for the wire envelope, the three normalized source records and the dead letter.

Wire encoding (documented in docs/ARCHITECTURE.md): one UTF-8 JSON object per Kinesis user record,
an ``Envelope`` whose ``payload`` is the normalized record of its source. Several user records may be
packed into one Kinesis record with KPL aggregation; consumers de-aggregate before decoding.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

__all__ = [
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
    "WebAccessLog",
    "make_event_id",
]

SCHEMA_VERSION = 1
"""Version of every contract below; bumped on any incompatible change."""


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


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
        digest.update(str(part).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class GeoPoint(_Contract):
    """A WGS84 position."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class IotReading(_Contract):
    """One normalized device reading. Metric values are floats; descriptive values are strings."""

    device_id: str = Field(min_length=1, max_length=256)
    event_time: UtcDatetime
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

    client_ip: str | None
    remote_user: str | None = None
    event_time: UtcDatetime
    request: str | None = Field(default=None, description="The raw request line, as logged.")
    method: str | None = None
    path: str | None = None
    query: str | None = None
    protocol: str | None = None
    status: int = Field(ge=0, le=999)
    bytes_sent: int | None = Field(default=None, ge=0)
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


FeedValue = str | int | float | bool | None


class FeedItem(_Contract):
    """One item of a polled JSON API (an earthquake of the USGS feed, a measurement, ...)."""

    feed: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    event_time: UtcDatetime
    updated_time: UtcDatetime | None = None
    location: GeoPoint | None = None
    fields: dict[str, FeedValue] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list, description="Labels set by filters.")


class Envelope(_Contract):
    """What one Kinesis user record carries: routing and de-duplication data around a payload.

    ``kind`` says what the payload is: a normalized record of ``source``, or a ``DeadLetter`` the edge
    produced (edge rejections travel the same stream, so one sink collects every dead letter).

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

    @model_serializer(mode="wrap")
    def _omit_unset_redrive_of(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("redrive_of", "") is None:
            del data["redrive_of"]
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
