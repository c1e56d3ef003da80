"""IoT telemetry parser: raw device messages in, normalized ``IotReading`` records out.

In: a batch of raw records (bytes or str), each one JSON value: a reading object, or an array of them.
Out: ``BatchResult[IotReading]``.
Dead letters: invalid UTF-8 (``invalid_encoding``), invalid JSON (``invalid_json``), no device id or no
timestamp (``missing_field``), an unusable timestamp (``invalid_timestamp``), anything else the
contract refuses (``schema_violation``), an over-long record (``too_large``).

Real devices send different shapes, so the parser accepts (and docs/ARCHITECTURE.md lists):
- the canonical shape ``{"device_id", "event_time", "metrics": {...}, "attributes": {...}, "location"}``;
- flat readings whose numeric fields are the metrics and whose string fields are attributes;
- MQTT bridge captures ``{"topic", "payload": {...}, "_msgid", "receivedTimestamp"}``, where the
  payload is the reading and the device id may be the next-to-last topic segment;
- arrays of readings (nested arrays too), each element its own reading;
- aliases: device id ``device_id, deviceId, deviceID, device, node_id, nodeId, node-id, sensor_id,
  sensorId``; time ``event_time, eventTime, timestamp, Timestamp, ts, time, Time, datetime, date, Date``;
  message id ``message_id, messageId, msg_id, msgid, _msgid``; location ``location`` or
  ``lat``/``latitude`` with ``lon``/``lng``/``longitude``.
Timestamps: epoch seconds, epoch milliseconds (values above 2e10) or ISO-8601; no zone means UTC.
Nested objects are flattened with dots (``Wifi.RSSI``); booleans become 1.0/0.0 metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from sluice.core.contracts import ErrorType, IotReading, Source, Stage
from sluice.core.deadletters import BatchResult, dead_letter, describe_validation_error
from sluice.core.errors import RecordRejected
from sluice.core.inputs import decode_json

__all__ = ["parse_iot_batch"]

MAX_FIELDS = 512
MAX_DEPTH = 8

DEVICE_KEYS = (
    "device_id", "deviceId", "deviceID", "device", "node_id", "nodeId", "node-id",
    "sensor_id", "sensorId",
)  # fmt: skip
TIME_KEYS = (
    "event_time", "eventTime", "timestamp", "Timestamp", "ts", "time", "Time", "datetime", "date", "Date",
)  # fmt: skip
WRAPPER_TIME_KEYS = (*TIME_KEYS, "receivedTimestamp", "received_at")
MESSAGE_ID_KEYS = ("message_id", "messageId", "msg_id", "msgid", "_msgid")
LAT_KEYS = ("lat", "latitude")
LON_KEYS = ("lon", "lng", "long", "longitude")
_RESERVED = frozenset(
    (*DEVICE_KEYS, *WRAPPER_TIME_KEYS, *MESSAGE_ID_KEYS, *LAT_KEYS, *LON_KEYS, "location",
     "metrics", "attributes", "flags", "payload", "topic", "_topic", "qos", "retain")
)  # fmt: skip
_CANONICAL = frozenset(
    ("device_id", "event_time", "metrics", "attributes", "location", "message_id", "flags")
)

STAGE = Stage.PARSE


def _first(obj: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = obj.get(key)
        if value is not None and value != "":
            return value
    return None


def _flatten_into(
    obj: Mapping[str, Any],
    prefix: str,
    depth: int,
    metrics: dict[str, float],
    attributes: dict[str, str],
) -> None:
    if depth > MAX_DEPTH:
        raise RecordRejected(ErrorType.SCHEMA_VIOLATION, f"nesting deeper than {MAX_DEPTH} levels")
    for key, value in obj.items():
        if not prefix and key in _RESERVED:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            metrics[name] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            metrics[name] = float(value)
        elif isinstance(value, str):
            attributes[name] = value
        elif isinstance(value, dict):
            _flatten_into(value, f"{name}.", depth + 1, metrics, attributes)
        elif value is not None:
            attributes[name] = orjson.dumps(value).decode()
    if len(metrics) + len(attributes) > MAX_FIELDS:
        raise RecordRejected(ErrorType.SCHEMA_VIOLATION, f"more than {MAX_FIELDS} fields")


def _location(body: Mapping[str, Any]) -> Any:
    location = body.get("location")
    if isinstance(location, dict):
        lat, lon = _first(location, LAT_KEYS), _first(location, LON_KEYS)
        return {"lat": lat, "lon": lon} if lat is not None or lon is not None else location
    if location is not None:
        return location  # let the contract say what is wrong with it
    lat, lon = _first(body, LAT_KEYS), _first(body, LON_KEYS)
    if lat is None and lon is None:
        return None
    return {"lat": lat, "lon": lon}


def normalize_reading(obj: Any) -> dict[str, Any]:
    """Map one decoded device message of any accepted shape onto the canonical reading shape."""
    if not isinstance(obj, dict):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION, f"a reading must be a JSON object, got {type(obj).__name__}"
        )
    if obj.keys() <= _CANONICAL and isinstance(obj.get("device_id"), str):
        return obj  # the shape our own edges emit: nothing to map
    wrapper: Mapping[str, Any] = {}
    body: Mapping[str, Any] = obj
    payload = obj.get("payload")
    if isinstance(payload, dict) and _first(obj, DEVICE_KEYS) is None:
        wrapper, body = obj, payload

    device = _first(body, DEVICE_KEYS) or _first(wrapper, DEVICE_KEYS)
    topic = wrapper.get("topic") or body.get("topic")
    if device is None and isinstance(topic, str):
        segments = [s for s in topic.split("/") if s]
        if len(segments) >= 3:
            device = segments[-2]
    if device is None:
        raise RecordRejected(ErrorType.MISSING_FIELD, "no device id (device_id, deviceId, ...)")
    event_time = _first(body, TIME_KEYS)
    if event_time is None:
        event_time = _first(wrapper, WRAPPER_TIME_KEYS) or _first(body, WRAPPER_TIME_KEYS)
    if event_time is None:
        raise RecordRejected(
            ErrorType.MISSING_FIELD, "no timestamp (event_time, timestamp, ts, ...)"
        )

    metrics: dict[str, float] = {}
    attributes: dict[str, str] = {}
    given_metrics = body.get("metrics")
    if isinstance(given_metrics, dict):
        metrics.update(given_metrics)
    given_attributes = body.get("attributes")
    if isinstance(given_attributes, dict):
        attributes.update(given_attributes)
    _flatten_into(body, "", 0, metrics, attributes)
    if isinstance(topic, str):
        attributes.setdefault("topic", topic)
    message_id = _first(body, MESSAGE_ID_KEYS) or _first(wrapper, MESSAGE_ID_KEYS)
    normalized = {
        "device_id": device if isinstance(device, str) else str(device),
        "event_time": event_time,
        "metrics": metrics,
        "attributes": attributes,
        "location": _location(body),
        "message_id": None if message_id is None else str(message_id),
    }
    if body.get("flags"):
        normalized["flags"] = body["flags"]
    return normalized


def _flatten_arrays(decoded: Any) -> Iterator[Any]:
    """A record may be one reading or (nested) arrays of readings, as device bridges wrap them."""
    if not isinstance(decoded, list):
        yield decoded
        return
    stack = [iter(decoded)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            yield item


_END = object()


def parse_iot_batch(
    records: Iterable[bytes | str], *, stage: Stage = STAGE
) -> BatchResult[IotReading]:
    """Parse a batch of raw device messages. Never raises for bad input."""
    result: BatchResult[IotReading] = BatchResult()
    validate = IotReading.model_validate
    for raw in records:
        try:
            decoded = decode_json(raw)
        except RecordRejected as rejected:
            result.dead_letters.append(
                dead_letter(Source.IOT, stage, rejected.error_type, rejected.message, raw)
            )
            continue
        for item in _flatten_arrays(decoded):
            try:
                result.valid.append(validate(normalize_reading(item)))
            except RecordRejected as rejected:
                result.dead_letters.append(
                    dead_letter(Source.IOT, stage, rejected.error_type, rejected.message,
                                raw if item is decoded else orjson.dumps(item))
                )  # fmt: skip
            except ValidationError as err:
                error_type, message = describe_validation_error(err)
                result.dead_letters.append(
                    dead_letter(Source.IOT, stage, error_type, message,
                                raw if item is decoded else orjson.dumps(item))
                )  # fmt: skip
    return result
