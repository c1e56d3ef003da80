"""IoT telemetry parser: raw device messages in, normalized ``IotReading`` records out.

In: a batch of raw records (bytes or str), each one JSON value: a reading object, or an array of them.
Out: ``BatchResult[IotReading]``; blank records (empty or ASCII whitespace, within the size limit) are
skipped and counted (``skipped``), so valid + rejected + skipped = readings in. Never raises for bad
input.
Dead letters: invalid UTF-8 (``invalid_encoding``), invalid JSON (``invalid_json``, which includes
numbers beyond a double such as ``1e400``), no device id or no timestamp (``missing_field``), an
unusable timestamp or one outside the ``TimeHorizon`` (``invalid_timestamp``), anything else the
contract refuses (``schema_violation``: a device id with control characters, non-finite metrics,
nesting too deep to re-encode, an array with no reading), an over-long record (``too_large``). At most
``max_dead_letters`` per batch one by one, the rest summarized (``too_many_errors``).

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
Timestamps: ISO-8601 (no zone means UTC) or epoch numbers, whose unit their magnitude decides: below
1e12 seconds, then milliseconds, microseconds, nanoseconds (``sluice.core.contracts.epoch_to_datetime``).
Nested objects are flattened with dots (``Wifi.RSSI``); booleans become 1.0/0.0 metrics.

Missing values: devices mark a value they could not measure with a sentinel (``-200`` in the UCI air
quality set, ``-999``, the string ``"NaN"``). ``Sentinels`` (``CoreSettings.iot_sentinels``,
``SLUICE_IOT_SENTINELS``; none by default) lists them: a metric equal to a numeric sentinel, or a
value equal to a string sentinel (which would otherwise be an attribute), is left out of the reading
and counted (``BatchResult.missing_metrics``), never a dead letter: the rest of the reading is good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sluice.core.contracts import DEFAULT_HORIZON, ErrorType, IotReading, Source, Stage, TimeHorizon
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    BatchResult,
    CappedDeadLetters,
    Rejection,
    describe_validation_error,
    is_blank,
)
from sluice.core.errors import RecordRejected
from sluice.core.inputs import MAX_RECORD_BYTES, decode_json, encode_json

__all__ = ["NO_SENTINELS", "Sentinels", "parse_iot_batch", "parse_iot_record"]

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


class Sentinels:
    """Values that mean "not measured": numbers compare by value (``-200`` matches ``-200.0``),
    strings exactly (``"NaN"``, ``"N/A"``). Booleans are no sentinels (``True == 1``)."""

    __slots__ = ("numbers", "strings")

    def __init__(self, values: Iterable[float | str] = ()) -> None:
        numbers: set[float] = set()
        strings: set[str] = set()
        for value in values:
            if isinstance(value, bool):
                raise ValueError(f"a sentinel is a number or a string, not {value!r}")
            if isinstance(value, str):
                strings.add(value)
            else:
                numbers.add(float(value))
        self.numbers = frozenset(numbers)
        self.strings = frozenset(strings)

    def __bool__(self) -> bool:
        return bool(self.numbers or self.strings)

    def remove_from(self, metrics: dict[str, Any], attributes: dict[str, str]) -> int:
        """Drop the sentinel values of ``metrics`` and ``attributes`` (both new dicts of the
        parser's own); how many were dropped."""
        missing = 0
        if self.numbers:
            for name in [
                k
                for k, v in metrics.items()
                if type(v) is not bool and isinstance(v, int | float) and v in self.numbers
            ]:
                del metrics[name]
                missing += 1
        if self.strings:
            for bag in (metrics, attributes):
                for name in [k for k, v in bag.items() if type(v) is str and v in self.strings]:
                    del bag[name]
                    missing += 1
        return missing


NO_SENTINELS = Sentinels()


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
            try:
                attributes[name] = encode_json(value).decode()
            except RecordRejected as rejected:
                raise RecordRejected(rejected.error_type, f"{name}: {rejected.message}") from None
    if len(metrics) + len(attributes) > MAX_FIELDS:
        raise RecordRejected(ErrorType.SCHEMA_VIOLATION, f"more than {MAX_FIELDS} fields")


def _require_scalar(what: str, value: Any) -> None:
    """Ids are strings or numbers: ``str()`` of a nested list is no id (and can exhaust the stack)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION,
            f"the {what} must be a string or a number, not {type(value).__name__}",
        )


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


def normalize_reading(
    obj: Any, sentinels: Sentinels = NO_SENTINELS, missing: list[int] | None = None
) -> dict[str, Any]:
    """Map one decoded device message of any accepted shape onto the canonical reading shape.

    Values equal to one of ``sentinels`` are left out; their number is added to ``missing[0]``.
    """
    if not isinstance(obj, dict):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION, f"a reading must be a JSON object, got {type(obj).__name__}"
        )
    if obj.keys() <= _CANONICAL and isinstance(obj.get("device_id"), str):
        if not sentinels:
            return obj  # the shape our own edges emit: nothing to map
        given_metrics, given_attributes = obj.get("metrics"), obj.get("attributes")
        if not isinstance(given_metrics, dict) or not isinstance(given_attributes, dict | None):
            return obj  # the contract says what is wrong
        kept_metrics, kept_attributes = dict(given_metrics), dict(given_attributes or {})
        dropped = sentinels.remove_from(kept_metrics, kept_attributes)
        if not dropped:
            return obj
        if missing is not None:
            missing[0] += dropped
        return {**obj, "metrics": kept_metrics, "attributes": kept_attributes}
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
    _require_scalar("device id", device)
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
    if sentinels:
        dropped = sentinels.remove_from(metrics, attributes)
        if missing is not None:
            missing[0] += dropped
    if isinstance(topic, str):
        attributes.setdefault("topic", topic)
    message_id = _first(body, MESSAGE_ID_KEYS) or _first(wrapper, MESSAGE_ID_KEYS)
    if message_id is not None:
        _require_scalar("message id", message_id)
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


def _item_raw(raw: bytes | str, decoded: Any, item: Any) -> bytes | str:
    """What a rejected reading keeps: the record, or the reading alone when the record held several
    (the record when the reading is nested too deep to be re-encoded)."""
    if item is decoded:
        return raw
    try:
        return encode_json(item)
    except RecordRejected:
        return raw


def parse_iot_record(
    raw: bytes | str,
    context: dict[str, Any] | None = None,
    sentinels: Sentinels = NO_SENTINELS,
    missing: list[int] | None = None,
) -> list[IotReading | Rejection]:
    """The readings and rejections of one raw record, in order: at least one, more for an array.

    ``context``: the contracts' validation context (``TimeHorizon.context``); none: the default
    horizon around now. Values equal to one of ``sentinels`` become missing metrics, counted in
    ``missing[0]`` when given. Never raises for bad input.
    """
    try:
        decoded = decode_json(raw)
    except RecordRejected as rejected:
        return [Rejection(rejected.error_type, rejected.message, raw)]
    if type(decoded) is not list:  # the common case: one reading, no array to walk
        return [_parse_item(raw, decoded, decoded, context, sentinels, missing)]
    outcomes = [
        _parse_item(raw, decoded, item, context, sentinels, missing)
        for item in _flatten_arrays(decoded)
    ]
    # ``[]``, ``[[], []]``: valid JSON, no reading
    return outcomes or [Rejection(ErrorType.SCHEMA_VIOLATION, "an array with no reading", raw)]


# ``IotReading.model_validate`` without its per-call keyword handling: the same validation.
_validate: Callable[..., IotReading] = IotReading.__pydantic_validator__.validate_python


def _parse_item(
    raw: bytes | str,
    decoded: Any,
    item: Any,
    context: dict[str, Any] | None,
    sentinels: Sentinels,
    missing: list[int] | None,
) -> IotReading | Rejection:
    if type(item) is not dict:  # no exception on the path a flood of junk takes
        message = f"a reading must be a JSON object, got {type(item).__name__}"
        return Rejection(ErrorType.SCHEMA_VIOLATION, message, _item_raw(raw, decoded, item))
    try:
        return _validate(normalize_reading(item, sentinels, missing), context=context)
    except RecordRejected as rejected:
        return Rejection(rejected.error_type, rejected.message, _item_raw(raw, decoded, item))
    except ValidationError as err:
        error_type, message = describe_validation_error(err)
        return Rejection(error_type, message, _item_raw(raw, decoded, item))


def parse_iot_batch(
    records: Iterable[bytes | str],
    *,
    stage: Stage = STAGE,
    horizon: TimeHorizon = DEFAULT_HORIZON,
    now: datetime | None = None,
    max_dead_letters: int = MAX_DEAD_LETTERS,
    sentinels: Sentinels = NO_SENTINELS,
) -> BatchResult[IotReading]:
    """Parse a batch of raw device messages. Never raises for bad input.

    ``horizon`` and ``now`` bound event times (``now`` defaults to the time of the call);
    ``max_dead_letters`` caps the dead letters built one by one (``CappedDeadLetters``). Their
    defaults are ``CoreSettings``' own. Values equal to one of ``sentinels``
    (``CoreSettings.iot_sentinels``) are left out and counted in ``missing_metrics``.
    """
    missing = [0]
    result: BatchResult[IotReading] = BatchResult()
    letters = CappedDeadLetters(Source.IOT, stage, max_dead_letters)
    context = horizon.context(now)
    valid = result.valid
    for raw in records:
        if len(raw) <= MAX_RECORD_BYTES and is_blank(raw):  # an over-long one is too_large
            result.skipped += 1
            continue
        for outcome in parse_iot_record(raw, context, sentinels, missing):
            if type(outcome) is Rejection:
                letters.add(outcome)
            else:
                valid.append(outcome)  # type: ignore[arg-type]
    result.missing_metrics = missing[0]
    letters.finish(result)
    return result
