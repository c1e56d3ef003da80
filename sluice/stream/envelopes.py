"""Envelopes: normalized records and dead letters wrapped for the stream, and unwrapped again.

In (edges): ``IotReading`` / ``WebAccessLog`` / ``FeedItem`` / ``DeadLetter`` values.
Out (edges): ``Envelope`` values and their wire bytes (one JSON object per Kinesis user record).
In (stream job): raw user records (bytes). Out: ``BatchResult[Envelope]``; a record that is not a
valid envelope becomes a dead letter (``invalid_json`` / ``schema_violation``).

Event ids are deterministic (see ``make_event_id``): a re-delivered event keeps its id.
- IoT: device id + message id when the device sent one, else device id + event time + metrics.
- Web logs: the line's origin (``s3://bucket/key``, a CloudWatch log event id, a file name) + its
  position there; two identical lines are two requests, so content alone is not an identity.
- Feeds: feed + item id + updated time (an updated item is a new event; an unchanged one is not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from sluice.core.contracts import (
    DeadLetter,
    Envelope,
    FeedItem,
    IotReading,
    Source,
    Stage,
    WebAccessLog,
    correlation_id,
    make_event_id,
)
from sluice.core.deadletters import BatchResult, dead_letter, describe_validation_error
from sluice.core.errors import RecordRejected
from sluice.core.inputs import MAX_RECORD_BYTES, decode_json

__all__ = [
    "MAX_PARTITION_KEY",
    "claimed_origin",
    "claimed_source",
    "decode_envelopes",
    "decoded_envelope",
    "encode",
    "feed_event_id",
    "weblog_event_id",
    "with_correlation_id",
    "wrap_access_log",
    "wrap_dead_letter",
    "wrap_feed_item",
    "wrap_reading",
]

MAX_PARTITION_KEY = 256


def iot_event_id(reading: IotReading) -> str:
    if reading.message_id:
        return make_event_id(Source.IOT, reading.device_id, "msg", reading.message_id)
    metrics = orjson.dumps(reading.metrics, option=orjson.OPT_SORT_KEYS)
    return make_event_id(Source.IOT, reading.device_id, reading.event_time.isoformat(), metrics)


def weblog_event_id(origin: str, position: int | str) -> str:
    return make_event_id(Source.WEBLOG, origin, position)


def feed_event_id(item: FeedItem) -> str:
    updated = item.updated_time or item.event_time
    return make_event_id(Source.FEED, item.feed, item.item_id, updated.isoformat())


def _now(ingest_time: datetime | None) -> datetime:
    return ingest_time or datetime.now(UTC)


def wrap_reading(reading: IotReading, ingest_time: datetime | None = None) -> Envelope:
    return Envelope(
        source=Source.IOT,
        event_id=iot_event_id(reading),
        ingest_time=_now(ingest_time),
        partition_key=reading.device_id[:MAX_PARTITION_KEY],
        payload=reading.model_dump(mode="json"),
    )


def wrap_access_log(
    record: WebAccessLog, origin: str, position: int | str, ingest_time: datetime | None = None
) -> Envelope:
    event_id = weblog_event_id(origin, position)
    return Envelope(
        source=Source.WEBLOG,
        event_id=event_id,
        ingest_time=_now(ingest_time),
        partition_key=event_id,  # spreads one busy file over all shards; order within a file is not needed
        payload=record.model_dump(mode="json"),
    )


def wrap_feed_item(item: FeedItem, ingest_time: datetime | None = None) -> Envelope:
    return Envelope(
        source=Source.FEED,
        event_id=feed_event_id(item),
        ingest_time=_now(ingest_time),
        partition_key=f"{item.feed}:{item.item_id}"[:MAX_PARTITION_KEY],
        payload=item.model_dump(mode="json"),
    )


def wrap_dead_letter(letter: DeadLetter, ingest_time: datetime | None = None) -> Envelope:
    return Envelope(
        source=letter.source,
        kind="dead_letter",
        event_id=letter.dead_letter_id,
        ingest_time=_now(ingest_time),
        partition_key=letter.dead_letter_id,
        payload=letter.model_dump(mode="json"),
    )


def encode(envelope: Envelope) -> bytes:
    """The wire form: compact UTF-8 JSON."""
    return envelope.model_dump_json().encode()


def decode_envelopes(
    records: Iterable[bytes], *, stage: Stage = Stage.DECODE
) -> BatchResult[Envelope]:
    """Decode user records (already de-aggregated). Never raises for bad input.

    A record that is not an envelope cannot be attributed to a source with certainty; it is
    dead-lettered under the source it claims, or ``iot`` when it claims none.
    """
    result: BatchResult[Envelope] = BatchResult()
    validate = Envelope.model_validate
    for raw in records:
        try:
            result.valid.append(validate(decode_json(raw)))
        except RecordRejected as rejected:
            result.dead_letters.append(
                dead_letter(Source.IOT, stage, rejected.error_type, rejected.message, raw)
            )
        except ValidationError as err:
            error_type, message = describe_validation_error(err)
            result.dead_letters.append(
                dead_letter(claimed_source(raw), stage, error_type, message, raw)
            )
    return result


def claimed_origin(raw: bytes) -> tuple[Source, str | None]:
    """The source (``iot`` when it says nothing) and correlation id a raw record that is not a valid
    envelope says it has, for its dead letter: one decode for both."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Source.IOT, None
    if not isinstance(decoded, dict):
        return Source.IOT, None
    claimed = decoded.get("source")
    source = _SOURCES.get(claimed, Source.IOT) if isinstance(claimed, str) else Source.IOT
    return source, correlation_id(decoded.get("correlation_id"))


def claimed_source(raw: bytes) -> Source:
    """The source a raw record says it is from, for dead-lettering it; ``iot`` when it says nothing."""
    return claimed_origin(raw)[0]


def with_correlation_id(envelopes: Iterable[Envelope], value: str | None) -> Iterator[Envelope]:
    """``envelopes``, each that has no correlation id given ``value`` (a checked id, or None: as they are)."""
    for envelope in envelopes:
        if value is None or envelope.correlation_id is not None:
            yield envelope
        else:
            yield envelope.model_copy(update={"correlation_id": value})


class DecodedEnvelope(NamedTuple):
    """The fields of a record envelope the job uses, read without pydantic (``decoded_envelope``)."""

    source: Source
    event_id: str
    ingest_time: datetime
    payload: dict[str, Any]
    redrive_of: str | None
    correlation_id: str | None


_ENVELOPE_KEYS = frozenset(Envelope.model_fields)
_REQUIRED_KEYS = frozenset(n for n, f in Envelope.model_fields.items() if f.is_required())
_SOURCES = {source.value: source for source in Source}
_WIRE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z")
"""A UTC time as ``encode`` writes it (pydantic's JSON form): ``2026-03-01T12:00:00.123456Z``."""


def decoded_envelope(raw: bytes) -> DecodedEnvelope | None:
    """The envelope in ``raw`` when it is a plain record envelope as the edges write it, checked
    by plain comparisons; None for anything else (a dead letter, bad JSON, an unusual but maybe
    valid form), which the caller gives to ``Envelope.model_validate`` for its exact verdict.

    Accepts only what the contract accepts, with the values it would produce: a JSON object of
    the envelope's keys, a known ``source``, ``kind`` "record", an integer ``schema_version``,
    text within the length bounds, an ingest time in the wire form (UTC, ``Z``) and an object
    payload. The payload is not checked here (see ``sluice.stream.stages.decode_batch``).
    """
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict or not _REQUIRED_KEYS <= value.keys() <= _ENVELOPE_KEYS:
        return None
    source = _SOURCES.get(value["source"]) if type(value["source"]) is str else None
    event_id, key, payload = value["event_id"], value["partition_key"], value["payload"]
    ingest, redrive = value["ingest_time"], value.get("redrive_of")
    correlation = value.get("correlation_id")
    if (
        source is None
        or value.get("kind", "record") != "record"
        or type(value.get("schema_version", 1)) is not int
        or type(event_id) is not str
        or not 1 <= len(event_id) <= 128
        or type(key) is not str
        or not 1 <= len(key) <= MAX_PARTITION_KEY
        or type(payload) is not dict
        or type(ingest) is not str
        or _WIRE_TIME.fullmatch(ingest) is None
        or not (redrive is None or (type(redrive) is str and 1 <= len(redrive) <= 128))
        or not (correlation is None or correlation_id(correlation) == correlation)
    ):
        return None
    try:
        ingest_time = datetime.fromisoformat(ingest).astimezone(UTC)
    except (ValueError, OverflowError):  # 2026-13-40...: the contract says why
        return None
    return DecodedEnvelope(source, event_id, ingest_time, payload, redrive, correlation)
