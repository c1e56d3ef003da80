"""Columnar IoT parse: a whole batch of raw device messages in, columns of valid readings out.

In: a batch of raw records (bytes or str), as ``sluice.parsing.iot.parse_iot_batch`` takes them.
Out: ``IotBatch``: the valid readings as ``IotColumns`` (one sequence per ``IotReading`` field, event
times as int64 microseconds since the epoch, UTC), the dead letters, and the counts of a
``BatchResult`` (skipped, suppressed, missing metrics). Never raises for bad input.
Dead letters: exactly those of ``parse_iot_batch`` on the same batch, in the same order, with the
same reasons and error types (tests/unit/test_iot_columns.py proves it over generated inputs).

How: the batch first goes through a strict typed decoder (msgspec, ``_Reading``: the canonical
shape, unknown fields forbidden, floats where the contract has floats), in one ``list.extend``
that resumes after each record it refuses. It refuses everything that orjson + pydantic could read
differently (other shapes, extra fields, bools as metrics, nulls pydantic objects to, bad UTF-8,
surrogates, numbers beyond a double); those records, and every batch with sentinels or an
over-long record, take the orjson pass: each record decoded (orjson) and, for readings whose shape
is already canonical or that ``normalize_reading`` maps onto it, kept as a dict. Then the checks
run once per batch, vectorized: device ids (length, control characters: one regex over the
batch), event times (ISO-8601 strings of one length checked byte by byte and converted in numpy,
others parsed by numpy after one strict regex; epoch numbers by unit in numpy; the
``TimeHorizon`` as two integer comparisons), and, unless every reading was typed-decoded, the
value types (exact ``type() is``, one ``set(map(type, ...))`` over the batch). A reading that
fails any fast check (or any record that is an array, too large, not JSON, ...) is parsed by the
reference path, ``sluice.parsing.iot``'s own per-reading code with pydantic, so its outcome (a
reading or a rejection) is today's exactly.
Why: pydantic per reading was most of ``sluice parse iot``'s time (72k readings/s), then orjson's
generic decode and the per-value type checks were; the fast path accepts only what the contract
provably accepts, so the reference decides every doubtful case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from sluice.core.contracts import (
    DEFAULT_HORIZON,
    GeoPoint,
    IotReading,
    Source,
    Stage,
    TimeHorizon,
)
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    BatchResult,
    CappedDeadLetters,
    ColumnBatch,
    Rejection,
)
from sluice.core.errors import RecordRejected
from sluice.core.inputs import MAX_RECORD_BYTES
from sluice.parsing.iot import (
    _CANONICAL,
    NO_SENTINELS,
    STAGE,
    Sentinels,
    _parse_item,
    normalize_reading,
    parse_iot_record,
)

__all__ = ["IotBatch", "IotColumns", "parse_iot_columns"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
_EMPTY: dict[str, Any] = {}
# Event-time strings the fast path parses: what every ISO-8601 parser reads the same way. Anything
# else (other offsets, week dates, a space for the T, leap seconds, numeric strings) goes to pydantic.
_ISO_ONE = (
    r"[0-9]{4}-[01][0-9]-[0-3][0-9]T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
)
_ISO_BATCH = re.compile(rf"(?:{_ISO_ONE}\n)*")
_ISO_SINGLE = re.compile(_ISO_ONE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Epoch units by magnitude, as sluice.core.contracts.epoch_to_datetime decides them.
_MS_FROM, _US_FROM, _NS_FROM, _NO_UNIT_FROM = 1e12, 1e15, 1e18, 1e21

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class IotColumns:
    """Valid readings, column by column (row ``i`` of each is reading ``i``). Immutable: the
    sequences are tuples, the time array is read-only, the dicts are this batch's own (treat them
    as read-only)."""

    device_id: tuple[str, ...] = ()
    event_time_us: Int64Array = field(default_factory=lambda: _frozen(np.zeros(0, np.int64)))
    """Event times, microseconds since 1970-01-01T00:00:00Z."""
    metrics: tuple[dict[str, float], ...] = ()
    attributes: tuple[dict[str, str], ...] = ()
    location: tuple[tuple[float, float] | None, ...] = ()
    """(lat, lon), or ``None``."""
    message_id: tuple[str | None, ...] = ()
    flags: tuple[tuple[str, ...], ...] = ()

    def __len__(self) -> int:
        return len(self.device_id)

    def event_times(self) -> list[datetime]:
        """Event times as aware UTC datetimes."""
        return [_EPOCH + timedelta(microseconds=us) for us in self.event_time_us.tolist()]

    def readings(self) -> list[IotReading]:
        """The rows as ``IotReading`` models (equal to what ``parse_iot_batch`` returns), for
        callers of the record API; built without re-validation (the rows are valid)."""
        construct = IotReading.model_construct
        point = GeoPoint.model_construct
        return [
            construct(
                device_id=d,
                event_time=t,
                metrics=m,
                attributes=a,
                location=None if loc is None else point(lat=loc[0], lon=loc[1]),
                message_id=mid,
                flags=list(f),
            )
            for d, t, m, a, loc, mid, f in zip(
                self.device_id,
                self.event_times(),
                self.metrics,
                self.attributes,
                self.location,
                self.message_id,
                self.flags,
                strict=True,
            )
        ]

    def json_lines(self) -> bytes:
        """One JSON object per reading and line, each byte for byte ``IotReading.model_dump_json``."""
        if not self.device_id:
            return b""
        dumps = orjson.dumps
        rows = [
            dumps(
                {
                    "device_id": d,
                    "event_time": t,
                    "metrics": m,
                    "attributes": a,
                    "location": None if loc is None else {"lat": loc[0], "lon": loc[1]},
                    "message_id": mid,
                    "flags": f,
                }
            )
            for d, t, m, a, loc, mid, f in zip(
                self.device_id,
                _iso_times(self.event_time_us),
                self.metrics,
                self.attributes,
                self.location,
                self.message_id,
                self.flags,
                strict=True,
            )
        ]
        rows.append(b"")
        return b"\n".join(rows)

    def metric_values(self) -> tuple[Int64Array, list[str], npt.NDArray[np.float64]]:
        """The metrics in long form: row index, metric name and value of each (row order, then
        each row's metric order), for vectorized aggregation."""
        counts = np.fromiter(map(len, self.metrics), np.int64, len(self.metrics))
        rows = np.repeat(np.arange(len(self.metrics), dtype=np.int64), counts)
        names = list(chain.from_iterable(self.metrics))
        values = np.fromiter(
            chain.from_iterable(map(dict.values, self.metrics)), np.float64, len(names)
        )
        return rows, names, values

    def to_arrow(self) -> Any:
        """The columns as a ``pyarrow.Table`` (pyarrow 16 or later, imported here: an optional
        dependency of the core). Metrics and attributes are maps, in each reading's order."""
        import pyarrow as pa

        def as_map(bags: Sequence[dict[str, Any]], kind: Any) -> Any:
            return pa.array([list(b.items()) for b in bags], pa.map_(pa.string(), kind))

        return pa.table({
            "device_id": pa.array(self.device_id, pa.string()),
            "event_time": pa.array(self.event_time_us, pa.timestamp("us", tz="UTC")),
            "metrics": as_map(self.metrics, pa.float64()),
            "attributes": as_map(self.attributes, pa.string()),
            "location": pa.array(
                [None if p is None else {"lat": p[0], "lon": p[1]} for p in self.location],
                pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
            ),
            "message_id": pa.array(self.message_id, pa.string()),
            "flags": pa.array([list(f) for f in self.flags], pa.list_(pa.string())),
        })  # fmt: skip


@dataclass(frozen=True, slots=True)
class IotBatch(ColumnBatch[IotColumns]):
    """What ``parse_iot_columns`` returns: ``BatchResult``'s content with the valid readings as
    columns. ``len(columns) + rejected + skipped`` is the number of readings in."""

    missing_metrics: int = 0

    def to_result(self) -> BatchResult[IotReading]:
        """The same batch as ``parse_iot_batch``'s ``BatchResult`` (readings as models)."""
        return BatchResult(
            self.columns.readings(), list(self.dead_letters), self.skipped,
            dict(self.suppressed), self.missing_metrics,
        )  # fmt: skip


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


def _iso_times(micros: Int64Array) -> Iterator[str]:
    """pydantic's form of each time: ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (fraction only if any)."""
    for text in np.datetime_as_string(micros.astype("datetime64[us]"), unit="us").tolist():
        yield text[:-7] + "Z" if text.endswith(".000000") else text + "Z"


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICRO


def _epoch_float_micros(
    values: npt.NDArray[np.float64],
) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    """``epoch_to_datetime`` of floats, vectorized: microseconds, and which values were usable."""
    magnitude = np.abs(values)
    ok = np.isfinite(values) & (magnitude < _NO_UNIT_FROM)
    scale = np.select(
        [magnitude < _MS_FROM, magnitude < _US_FROM, magnitude < _NS_FROM], [1e6, 1e3, 1.0], 1e-3
    )
    micros = np.rint(np.where(ok, values, 0.0) * scale)
    return micros.astype(np.int64), ok


def _epoch_int_micros(values: Sequence[int]) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    """``epoch_to_datetime`` of ints (exact integer arithmetic, as there): microseconds, usable."""
    try:
        arr = np.array(values, dtype=np.int64)
    except OverflowError:  # beyond 64 bits: the reference path says what is wrong
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    magnitude = np.abs(arr)  # |min int64| stays negative: below every bound, so refused below
    ok = (magnitude >= 0) & (magnitude < int(_NS_FROM))
    seconds = magnitude < int(_MS_FROM)
    millis = ~seconds & (magnitude < int(_US_FROM))
    micros_unit = ~seconds & ~millis & (magnitude < int(_NS_FROM))
    safe = np.where(ok, arr, 0)
    micros = np.where(
        seconds, safe * 1_000_000, np.where(millis, safe * 1_000, np.where(micros_unit, safe, 0))
    )
    return micros.astype(np.int64), ok  # nanoseconds (>= 1e18) go to the reference path


# Positions of the strict form ``YYYY-MM-DDTHH:MM:SS``: digits, and the separators between them.
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_SEPARATORS = ((4, ord("-")), (7, ord("-")), (10, ord("T")), (13, ord(":")), (16, ord(":")))
_DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _iso_uniform(texts: list[str]) -> tuple[Int64Array, npt.NDArray[np.bool_]] | None:
    """``_iso_micros`` of a batch whose strings are ASCII, of one length and all ``Z``-suffixed
    or all bare (what our edges and most devices send): the strict form checked byte by byte and
    the date computed in numpy (days in each month, leap years), as ``_ISO_SINGLE`` and numpy's
    parser decide. ``None`` for any other batch (the general path)."""
    n = len(texts)
    width = len(texts[0])
    if width < 19:
        return None
    try:
        blob = "".join(texts).encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(blob) != n * width:
        return None
    chars = np.frombuffer(blob, np.uint8).reshape(n, width)
    if chars[:, -1].min() == ord("Z") == chars[:, -1].max():
        chars = chars[:, :-1]
    width = chars.shape[1]
    if not (width == 19 or 21 <= width <= 26):  # the seconds, then "." and 1 to 6 digits
        return None
    digits = chars - np.uint8(ord("0"))  # any other byte wraps around to above 9
    columns = _DIGITS if width == 19 else np.r_[_DIGITS, np.arange(20, width)]
    ok = (digits[:, columns] <= 9).all(axis=1)
    for at, char in _SEPARATORS:
        ok &= chars[:, at] == char
    if width > 19:
        ok &= chars[:, 19] == ord(".")

    def number(first: int, end: int) -> Int64Array:
        value = digits[:, first].astype(np.int64)
        for at in range(first + 1, end):
            value = value * 10 + digits[:, at]
        return value

    year, month, day = number(0, 4), number(5, 7), number(8, 10)
    hour, minute, second = number(11, 13), number(14, 16), number(17, 19)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (month >= 1) & (month <= 12)
    month = np.where(ok, month, 1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    ok &= (day >= 1) & (day <= _DAYS_IN_MONTH[month] + (leap & (month == 2)))
    # Days since 1970-01-01 in the proleptic Gregorian calendar (numpy's): whole years, then months.
    before = year - 1
    days = (
        365 * (year - 1970) + before // 4 - before // 100 + before // 400 - 477
        + _DAYS_BEFORE_MONTH[month] + (leap & (month > 2)) + day - 1
    )  # fmt: skip
    fraction = number(20, width) * 10 ** (26 - width) if width > 19 else 0
    micros = ((days * 24 + hour) * 60 + minute) * 60 + second
    micros = micros * 1_000_000 + fraction
    return np.where(ok, micros, 0), ok


def _iso_micros(texts: list[str]) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    """Event-time strings in the strict form (optionally ``Z`` or ``+00:00``): microseconds.
    Strings of one length at a time through ``_iso_uniform`` (pydantic's form leaves out a zero
    fraction: two lengths), the rest through the regex and numpy's parser."""
    n = len(texts)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    lengths = np.fromiter(map(len, texts), np.int64, n)
    if lengths.min() == lengths.max():
        uniform = _iso_uniform(texts)
        return _iso_general(texts) if uniform is None else uniform
    micros = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    for width in np.unique(lengths).tolist():
        index = np.flatnonzero(lengths == width)
        group = [texts[i] for i in index.tolist()]
        got = _iso_uniform(group) or _iso_general(group)
        micros[index], ok[index] = got
    return micros, ok


def _iso_general(texts: list[str]) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    """``_iso_micros`` of any strings: the strict regex, then numpy's parser."""
    n = len(texts)
    bare = [t[:-1] if t[-1:] == "Z" else t[:-6] if t.endswith("+00:00") else t for t in texts]
    if _ISO_BATCH.fullmatch("\n".join(bare) + "\n") is not None:
        ok = np.ones(n, bool)
    else:
        ok = np.fromiter((_ISO_SINGLE.fullmatch(t) is not None for t in bare), bool, n)
        bare = [t if good else "1970-01-01T00:00:00" for t, good in zip(bare, ok, strict=True)]
    try:
        parsed = np.array(bare, dtype="datetime64[us]")
    except ValueError:  # a day that does not exist (02-30): find which, one by one
        parsed = np.empty(n, "datetime64[us]")
        for i, text in enumerate(bare):
            try:
                parsed[i] = np.datetime64(text, "us")
            except ValueError:
                ok[i] = False
                parsed[i] = np.datetime64(0, "us")
    return parsed.view(np.int64), ok


def _event_times(
    raw: list[Any], earliest: int, latest: int
) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    """Microseconds of each raw event time and whether the fast path may take it."""
    n = len(raw)
    micros = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    kinds = set(map(type, raw))
    for kind in kinds:
        if kind is float or kind is int or kind is str:
            index = (
                np.arange(n)
                if len(kinds) == 1
                else np.flatnonzero(np.fromiter((type(v) is kind for v in raw), bool, n))
            )
            values = raw if len(kinds) == 1 else [raw[i] for i in index]
            if kind is float:
                got, good = _epoch_float_micros(np.array(values, dtype=np.float64))
            elif kind is int:
                got, good = _epoch_int_micros(values)
            else:
                got, good = _iso_micros(values)
            micros[index] = got
            ok[index] = good
    ok &= (micros >= earliest) & (micros <= latest)
    return micros, ok


def _all_of(kind: type, bags: list[dict[str, Any]]) -> npt.NDArray[np.bool_] | None:
    """``None`` when every value of every bag is exactly of ``kind``, else which bags are."""
    if set(map(type, chain.from_iterable(map(dict.values, bags)))) <= {kind}:
        return None
    return np.fromiter(
        (all(type(v) is kind for v in bag.values()) for bag in bags), bool, len(bags)
    )


def _as_floats(metrics: dict[str, Any]) -> dict[str, float] | None:
    """Metrics of ints and bools as pydantic makes them (floats); ``None`` for anything else."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        kind = type(value)
        if kind is float:
            out[name] = value
        elif kind is int or kind is bool:
            out[name] = float(value)
        else:
            return None
    return out


def _location(value: Any) -> tuple[bool, tuple[float, float] | None]:
    """(fast path may take it, the point)."""
    if value is None:
        return True, None
    if type(value) is _Point:
        lat, lon = value.lat, value.lon
    elif type(value) is not dict or value.keys() != {"lat", "lon"}:
        return False, None
    else:
        lat, lon = value["lat"], value["lon"]
    if type(lat) not in (float, int) or type(lon) not in (float, int):
        return False, None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return False, None
    return True, (float(lat), float(lon))


_MISSING = object()


class _Point(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``location`` as the typed decoder reads it (ints become floats, as pydantic makes them)."""

    lat: float
    lon: float


class _Reading(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The canonical reading shape as a strict typed decode (msgspec) reads it. A record it
    decodes is one orjson decodes to the same values (tests/unit/test_iot_columns.py checks null
    vs missing, duplicate and escaped keys, numbers beyond 64 bits or a double, surrogates, bad
    UTF-8): anything else (other shapes, extra fields, bools as metrics, nulls where pydantic would
    object) fails the decode and goes to the orjson path. ``gc=False``: no reference cycles."""

    device_id: str
    event_time: str | int | float
    metrics: dict[str, float] = {}
    attributes: dict[str, str] = {}
    location: _Point | None = None
    message_id: str | None = None
    flags: list[str] = []


_DECODE = msgspec.json.Decoder(_Reading).decode
_astuple = msgspec.structs.astuple


class _Gather:
    """One batch's records sorted into what the fast checks look at (``readings``: typed-decoded
    ``_Reading`` or normalized dicts, with their records) and the reference path's outcomes."""

    __slots__ = ("context", "items", "missing", "others", "position", "raws", "readings",
                 "row_missing", "sentinels", "skipped")  # fmt: skip

    def __init__(self, context: dict[str, Any], sentinels: Sentinels) -> None:
        self.context = context
        self.sentinels = sentinels
        self.readings: list[Any] = []
        self.raws: list[bytes | str] = []
        self.items: dict[int, Any] = {}  # index in ``readings`` -> decoded item, if normalized
        self.row_missing: dict[int, int] = {}  # index in ``readings`` -> sentinel values left out
        self.others: list[tuple[int, IotReading | Rejection]] = []  # (position, outcome)
        self.skipped = 0
        self.missing = [0]
        self.position = 0

    def typed(self, batch: list[bytes | str]) -> None:
        """Every record (none over the size limit) through the typed decoder in one ``extend``,
        which keeps what it decoded before a record it refuses; that record goes to ``take``
        and the decoder resumes after it."""
        readings, rest, index, n = self.readings, iter(batch), 0, len(batch)
        while index < n:
            before = len(readings)
            try:
                readings.extend(map(_DECODE, rest))
                refused = False
            except ValueError:  # not the canonical shape, or bad JSON: today's path decides
                refused = True
            added = len(readings) - before
            self.raws.extend(batch[index : index + added])
            self.position += added
            index += added
            if refused:
                self.take(batch[index])
                index += 1

    def take(self, raw: bytes | str) -> None:
        """One record by orjson and ``normalize_reading`` (a fast-check candidate), or by the
        reference path."""
        if len(raw) <= MAX_RECORD_BYTES:
            if type(raw) is bytes:
                if not raw or raw.isspace():
                    self.skipped += 1
                    return
            elif not raw.strip(_ASCII_WHITESPACE):  # type: ignore[arg-type]
                self.skipped += 1
                return
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError:
                item = _MISSING
        else:
            item = _MISSING
        sentinels, readings = self.sentinels, self.readings
        if type(item) is dict:
            if not sentinels and item.keys() <= _CANONICAL and type(item.get("device_id")) is str:
                readings.append(item)  # the canonical shape: normalize_reading returns it as is
            else:
                counter = [0]
                try:
                    reading = normalize_reading(item, sentinels, counter)
                except RecordRejected:
                    reading = None
                if type(reading) is dict:
                    if reading is not item:
                        self.items[len(readings)] = item
                    if counter[0]:
                        self.row_missing[len(readings)] = counter[0]
                    readings.append(reading)
                else:
                    outcome = _parse_item(raw, item, item, self.context, sentinels, self.missing)
                    self.others.append((self.position, outcome))
                    self.position += 1
                    return
            self.raws.append(raw)
            self.position += 1
            return
        # Not JSON, too large, an array of readings, a scalar: the reference path, whole record.
        for outcome in parse_iot_record(raw, self.context, sentinels, self.missing):
            self.others.append((self.position, outcome))
            self.position += 1


def parse_iot_columns(
    records: Iterable[bytes | str],
    *,
    stage: Stage = STAGE,
    horizon: TimeHorizon = DEFAULT_HORIZON,
    now: datetime | None = None,
    max_dead_letters: int = MAX_DEAD_LETTERS,
    sentinels: Sentinels = NO_SENTINELS,
) -> IotBatch:
    """``parse_iot_batch`` (same arguments, same readings, same dead letters), columnar."""
    context = horizon.context(now)
    bounds = next(iter(context.values()))
    gather = _Gather(context, sentinels)
    batch = records if type(records) is list else list(records)
    if not sentinels and max(map(len, batch), default=0) <= MAX_RECORD_BYTES:
        gather.typed(batch)  # sentinels map values: the orjson path does that
    else:
        for raw in batch:
            gather.take(raw)
    readings, raws, items, others, missing = (
        gather.readings,
        gather.raws,
        gather.items,
        gather.others,
        gather.missing,
    )
    row_missing, skipped, position = gather.row_missing, gather.skipped, gather.position
    letters = CappedDeadLetters(Source.IOT, stage, max_dead_letters)
    n = len(readings)
    ok, columns = _check(readings, _micros(bounds.earliest), _micros(bounds.latest))
    if others:  # the fast rows are the positions the reference path did not take
        taken = np.ones(position, bool)
        taken[[p for p, _ in others]] = False
        positions = np.flatnonzero(taken)
    else:
        positions = np.arange(n)
    bad = np.flatnonzero(~ok).tolist()
    for i in bad:  # the reference path decides
        item = items.get(i, readings[i])
        if type(item) is _Reading:  # typed-decoded: the record path from the raw record
            (outcome,) = parse_iot_record(raws[i], context, sentinels, missing)
        else:
            outcome = _parse_item(raws[i], item, item, context, sentinels, missing)
        others.append((int(positions[i]), outcome))
    missing_fast = sum(row_missing.values()) - sum(row_missing.get(i, 0) for i in bad)
    if bad:
        others.sort(key=lambda pair: pair[0])
    for _, outcome in others:
        if type(outcome) is Rejection:
            letters.add(outcome)
    extra = [(p, o) for p, o in others if type(o) is not Rejection]
    result: BatchResult[IotReading] = BatchResult()
    letters.finish(result)
    return IotBatch(
        _columns(columns, ok if bad else None, positions, extra),
        tuple(result.dead_letters), skipped, result.suppressed, missing[0] + missing_fast,
    )  # fmt: skip


def _check(
    readings: list[Any], earliest: int, latest: int
) -> tuple[npt.NDArray[np.bool_], list[Any]]:
    """Which readings (typed-decoded ``_Reading`` or normalized dicts) the fast path takes (the
    contract would accept them as they are, or with ints made floats), and their columns (device
    id, event time, metrics, attributes, location, message id, flags). Checks over the whole
    batch; row by row only where a batch check found something to look at. The type checks are
    left out when every reading is typed-decoded: the decoder made those types."""
    n = len(readings)
    typed = set(map(type, readings)) <= {_Reading}
    ids, raw_times, metrics, attributes, locations, message_ids, flags = _fields(readings, typed)
    ok = np.ones(n, bool)
    if not typed:
        _check_types(ok, ids, metrics, attributes, message_ids)
    distinct = set(ids)  # devices send many readings: check each id once
    if distinct and (
        min(map(len, distinct)) < 1
        or max(map(len, distinct)) > 256
        or _CONTROL.search("".join(distinct)) is not None
    ):
        refused = {d for d in distinct if not 1 <= len(d) <= 256 or _CONTROL.search(d)}
        ok &= np.fromiter((d not in refused for d in ids), bool, n)
    micros, good_times = _event_times(raw_times, earliest, latest)
    ok &= good_times
    if set(map(type, locations)) != {type(None)} and n:
        for i, value in enumerate(locations):
            good, locations[i] = _location(value)
            if not good:
                ok[i] = False
    if typed:  # lists of strings
        flags = [tuple(value) if value else () for value in flags]
    else:
        for i, value in enumerate(flags):
            if value == () or value == []:
                flags[i] = ()
            elif type(value) is list and all(type(f) is str for f in value):
                flags[i] = tuple(value)
            else:
                ok[i] = False
    return ok, [ids, micros, metrics, attributes, locations, message_ids, flags]


def _check_types(
    ok: npt.NDArray[np.bool_],
    ids: list[Any],
    metrics: list[Any],
    attributes: list[Any],
    message_ids: list[Any],
) -> None:
    """The type checks of normalized dicts: clears ``ok`` where a field's type is not the
    contract's; replaces what later checks cannot read (a non-string id, a non-dict bag) and makes
    int and bool metrics floats, as pydantic does."""
    n = len(ids)
    if set(map(type, ids)) != {str}:
        good = np.fromiter((type(d) is str for d in ids), bool, n)
        ok &= good
        ids[:] = [d if fine else "-" for d, fine in zip(ids, good, strict=True)]
    for bags in (metrics, attributes):
        if set(map(type, bags)) != {dict}:
            for i, bag in enumerate(bags):
                if type(bag) is not dict:
                    ok[i] = False
                    bags[i] = _EMPTY
    floats = _all_of(float, metrics)
    if floats is not None:  # ints or bools among the metrics (pydantic makes them floats), or worse
        for i in np.flatnonzero(~floats).tolist():
            converted = _as_floats(metrics[i])
            if converted is None:
                ok[i] = False
            else:
                metrics[i] = converted
    strings = _all_of(str, attributes)
    if strings is not None:
        ok &= strings
    if not set(map(type, message_ids)) <= {type(None), str}:
        ok &= np.fromiter((m is None or type(m) is str for m in message_ids), bool, n)


def _fields(readings: list[Any], typed: bool) -> list[list[Any]]:
    """The fields of each reading (typed-decoded ``_Reading`` or normalized dict), column by
    column: device id, event time, metrics, attributes, location, message id, flags."""
    if not readings:
        return [[] for _ in range(7)]
    if typed:  # the common batch: one transposition
        return [list(column) for column in zip(*map(_astuple, readings), strict=True)]
    rows = [
        _astuple(r) if type(r) is _Reading else (
            r["device_id"], r.get("event_time", _MISSING), r.get("metrics", _EMPTY),
            r.get("attributes", _EMPTY), r.get("location"), r.get("message_id"),
            r.get("flags", ()),
        )
        for r in readings
    ]  # fmt: skip
    return [list(column) for column in zip(*rows, strict=True)]


def _columns(
    columns: list[Any],
    keep: npt.NDArray[np.bool_] | None,
    positions: npt.NDArray[np.int64],
    extra: list[tuple[int, Any]],
) -> IotColumns:
    """The kept fast rows and the readings the reference path accepted, in input order."""
    ids, micros, metrics, attributes, locations, message_ids, flags = columns
    fields: list[list[Any]] = [ids, metrics, attributes, locations, message_ids, flags]
    if keep is not None:
        index = np.flatnonzero(keep).tolist()
        fields = [[column[i] for i in index] for column in fields]
        micros = micros[keep]
        positions = positions[keep]
    if extra:
        for column, values in zip(fields, _reading_fields([r for _, r in extra]), strict=True):
            column.extend(values)
        extra_micros = np.array([_micros(r.event_time) for _, r in extra], np.int64)
        micros = np.concatenate([micros, extra_micros])
        keys = np.concatenate([positions, np.array([p for p, _ in extra], np.int64)])
        order = np.argsort(keys, kind="stable")
        fields = [[column[i] for i in order.tolist()] for column in fields]
        micros = micros[order]
    ids, metrics, attributes, locations, message_ids, flags = fields
    return IotColumns(
        tuple(ids), _frozen(np.ascontiguousarray(micros, np.int64)), tuple(metrics),
        tuple(attributes), tuple(locations), tuple(message_ids), tuple(flags),
    )  # fmt: skip


def _reading_fields(readings: list[IotReading]) -> list[list[Any]]:
    return [
        [r.device_id for r in readings],
        [r.metrics for r in readings],
        [r.attributes for r in readings],
        [None if r.location is None else (r.location.lat, r.location.lon) for r in readings],
        [r.message_id for r in readings],
        [tuple(r.flags) for r in readings],
    ]
