"""Beam coders for the job's elements (``SourceBatch``, ``JobBatch``): explicit encodings, no pickle.

In: the elements between the job's stages. Out: bytes and back, registered with Beam's coder
registry for both types (importing this module registers them); the job's transforms declare
their output types so the registry picks these coders.

Why: Beam estimates every PCollection's element size with its coder, and it *encodes* to do so,
always for the first elements of a counter and then for a sample. Our elements are few and large
(a batch is one GetRecords call, up to thousands of records), so with Beam's fallback
(``PickleCoder``) about half the job's time went into pickling batches of pydantic models only
to measure them (py-spy, ``reports/performance-job.md``). These coders estimate a batch's size
from its lengths without encoding it, and encode without pickling when a runner really moves a
batch between workers:

- ``SourceBatch``: a small JSON header and the records as columns (sequence numbers, sub-sequences,
  arrival times, partition keys, data), variable-length columns as one length array plus the
  concatenated bytes.
- ``JobBatch``: a JSON header (positions, counters), the events' and dead letters' records as
  pydantic's own JSON (serialized and validated in Rust, one call per source), window keys as JSON
  and window states in their stored binary form (``to_bytes``). Decoding validates records again
  with an open time horizon (they passed the real one when decoded from the stream).

A batch whose records the contracts could not produce (a record built without validation, with a
value JSON cannot carry) is encoded with pickle instead, marked by its first byte, so an element
never fails its bundle nor arrives changed (encoding validates the records' JSON once, which is
cheap next to moving the batch); the job's own stages only make validated records.
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import pickle
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, Final

import orjson
from apache_beam.coders.coder_impl import CallbackCoderImpl
from apache_beam.coders.coders import FastCoder
from apache_beam.coders.typecoders import registry
from pydantic import TypeAdapter

from sluice.core.contracts import (
    MAX_FUTURE_SECONDS_LIMIT,
    DeadLetter,
    Source,
    Stage,
    TimeHorizon,
)
from sluice.stream.kinesis.records import SourceBatch, SourceRecord
from sluice.stream.stages import RECORD_LISTS, Event, JobBatch
from sluice.transform.accumulators import MetricStats, WebTrafficStats

__all__ = ["JobBatchCoder", "SourceBatchCoder", "register_coders"]

_EXPLICIT: Final = b"\x01"
_PICKLED: Final = b"\x00"
_LENGTH = "I"
"""Lengths of variable-length values: unsigned 32-bit (a Kinesis record is at most 1 MiB)."""

_LETTERS: TypeAdapter[list[DeadLetter]] = TypeAdapter(list[DeadLetter])
_OPEN_HORIZON = TimeHorizon(
    max_future_seconds=MAX_FUTURE_SECONDS_LIMIT, min_event_time=datetime(1, 1, 2, tzinfo=UTC)
).context(datetime(9000, 1, 1, tzinfo=UTC))
"""Every event time a record can hold is inside it: records were checked against the real horizon
(around their arrival) when the job decoded them; this one must not judge them again."""


# --- columns -------------------------------------------------------------------------------------


def _pack(values: Sequence[bytes]) -> list[bytes]:
    """A column of byte strings as [lengths, concatenation], both length-prefixed."""
    lengths = array(_LENGTH, map(len, values)).tobytes()
    data = b"".join(values)
    return [len(lengths).to_bytes(4, "little"), lengths, len(data).to_bytes(8, "little"), data]


def _unpack(buffer: memoryview, at: int) -> tuple[list[bytes], int]:
    size = int.from_bytes(buffer[at : at + 4], "little")
    at += 4
    lengths = array(_LENGTH)
    lengths.frombytes(buffer[at : at + size])
    at += size
    total = int.from_bytes(buffer[at : at + 8], "little")
    at += 8
    data = bytes(buffer[at : at + total])
    at += total
    ends = list(accumulate(lengths))
    starts = [0, *ends[:-1]] if ends else []
    return [data[s:e] for s, e in zip(starts, ends, strict=True)], at


def _pack_json(value: Any) -> list[bytes]:
    return _pack([orjson.dumps(value)])


def _unpack_json(buffer: memoryview, at: int) -> tuple[Any, int]:
    [data], at = _unpack(buffer, at)
    return orjson.loads(data), at


def _text(values: Sequence[str]) -> list[bytes]:
    # Partition keys and event ids are text from the wire; surrogatepass keeps even a lone
    # surrogate (it round-trips instead of failing the element).
    return [v.encode("utf-8", "surrogatepass") for v in values]


def _texts(values: Sequence[bytes]) -> list[str]:
    return [v.decode("utf-8", "surrogatepass") for v in values]


def _with_fallback(encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def encode_or_pickle(value: Any) -> bytes:
        try:
            return _EXPLICIT + encode(value)
        except Exception:  # noqa: BLE001 - see the module docstring: never fail the element
            return _PICKLED + pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    return encode_or_pickle


def _decoding(decode: Callable[[memoryview], Any]) -> Callable[[bytes], Any]:
    def decode_either(data: bytes) -> Any:
        view = memoryview(data)
        if data[:1] == _PICKLED:
            return pickle.loads(view[1:])  # our own encoding of our own element
        return decode(view[1:])

    return decode_either


# --- SourceBatch ---------------------------------------------------------------------------------


def encode_source_batch(batch: SourceBatch) -> bytes:
    records = batch.records
    header = [batch.stream, batch.shard_id, batch.first_sequence, batch.last_sequence,
              batch.previous_sequence, batch.max_arrival, batch.millis_behind_latest]  # fmt: skip
    parts = [
        *_pack_json(header),
        *_pack(_text([r.sequence_number for r in records])),
        array("q", [r.sub_sequence for r in records]).tobytes(),
        array("d", [r.arrival for r in records]).tobytes(),
        *_pack(_text([r.partition_key for r in records])),
        *_pack([r.data for r in records]),
    ]
    return len(records).to_bytes(4, "little") + b"".join(parts)


def decode_source_batch(view: memoryview) -> SourceBatch:
    count = int.from_bytes(view[:4], "little")
    header, at = _unpack_json(view, 4)
    sequences, at = _unpack(view, at)
    subs = array("q")
    subs.frombytes(view[at : at + 8 * count])
    at += 8 * count
    arrivals = array("d")
    arrivals.frombytes(view[at : at + 8 * count])
    at += 8 * count
    keys, at = _unpack(view, at)
    datas, at = _unpack(view, at)
    records = tuple(map(SourceRecord, _texts(sequences), subs, arrivals, _texts(keys), datas))
    stream, shard, first, last, previous, max_arrival, behind = header
    return SourceBatch(stream, shard, records, first, last, previous, max_arrival, behind)


def source_batch_size(batch: SourceBatch) -> int:
    """An estimate of the encoded size, from lengths only (what Beam's size counters need)."""
    return 64 + sum(len(r.data) + 32 for r in batch.records)


class SourceBatchCoder(FastCoder):
    """``SourceBatch`` <-> bytes (see the module docstring)."""

    def _create_impl(self) -> CallbackCoderImpl:
        return CallbackCoderImpl(
            _with_fallback(encode_source_batch),
            _decoding(decode_source_batch),
            source_batch_size,
        )

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type[SourceBatch]:
        return SourceBatch

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


# --- JobBatch ------------------------------------------------------------------------------------


def _events_parts(events: Sequence[Event], adapter: TypeAdapter[Any]) -> list[bytes]:
    ingest = [e.ingest_time.isoformat() for e in events]
    columns = [[e.sequence for e in events], [e.sub_sequence for e in events],
               [e.arrival for e in events], ingest, [e.redrive_of for e in events],
               [e.correlation_id for e in events]]  # fmt: skip
    records = adapter.dump_json([e.record for e in events])
    # What JSON cannot carry (a NaN of a record made without its contract) fails here, so the
    # batch is pickled instead of arriving changed.
    adapter.validate_json(records, context=_OPEN_HORIZON)
    return [*_pack_json(columns), *_pack(_text([e.event_id for e in events])), *_pack([records])]


def _events_from(view: memoryview, at: int, adapter: TypeAdapter[Any]) -> tuple[list[Event], int]:
    columns, at = _unpack_json(view, at)
    ids, at = _unpack(view, at)
    [records_json], at = _unpack(view, at)
    records = adapter.validate_json(records_json, context=_OPEN_HORIZON)
    sequences, subs, arrivals, ingest, redrives, correlations = columns
    ingest_times = [datetime.fromisoformat(t) for t in ingest]
    return list(map(Event, sequences, subs, arrivals, _texts(ids), ingest_times, records,
                    redrives, correlations)), at  # fmt: skip


def _windows_parts(windows: Any) -> list[bytes]:
    keys = [[*k[:-1], k[-1].isoformat()] for k in windows]
    return [*_pack_json(keys), *_pack([s.to_bytes() for s in windows.values()])]


def _windows_from(view: memoryview, at: int, accumulator: Any) -> tuple[dict[Any, Any], int]:
    keys, at = _unpack_json(view, at)
    states, at = _unpack(view, at)
    windows = {
        (*k[:-1], datetime.fromisoformat(k[-1])): accumulator.from_bytes(s)
        for k, s in zip(keys, states, strict=True)
    }
    return windows, at


def encode_job_batch(batch: JobBatch) -> bytes:
    header = {
        "shard": batch.shard_id, "first": batch.first_sequence, "last": batch.last_sequence,
        "previous": batch.previous_sequence, "max_arrival": batch.max_arrival,
        "redriven": batch.redriven, "sources": [s.value for s in batch.events],
        "counters": {str(stage): dict(c) for stage, c in batch.stage_counters.items()},
    }  # fmt: skip
    parts = _pack_json(header)
    for source, events in batch.events.items():
        parts += _events_parts(events, RECORD_LISTS[source])
    parts += _events_parts(batch.dead_letters, _LETTERS)
    parts += _windows_parts(batch.iot_windows)
    parts += _windows_parts(batch.web_windows)
    return b"".join(parts)


def decode_job_batch(view: memoryview) -> JobBatch:
    header, at = _unpack_json(view, 0)
    events: dict[Source, tuple[Event, ...]] = {}
    for value in header["sources"]:
        source = Source(value)
        found, at = _events_from(view, at, RECORD_LISTS[source])
        events[source] = tuple(found)
    letters, at = _events_from(view, at, _LETTERS)
    iot_windows, at = _windows_from(view, at, MetricStats)
    web_windows, at = _windows_from(view, at, WebTrafficStats)
    return JobBatch(
        shard_id=header["shard"],
        first_sequence=header["first"],
        last_sequence=header["last"],
        previous_sequence=header["previous"],
        max_arrival=header["max_arrival"],
        events=events,
        dead_letters=tuple(letters),
        iot_windows=iot_windows,
        web_windows=web_windows,
        stage_counters={Stage(s): c for s, c in header["counters"].items()},
        redriven=header["redriven"],
    )


def job_batch_size(batch: JobBatch) -> int:
    """An estimate of the encoded size from counts only (records ~300 bytes of JSON each)."""
    events = sum(len(e) for e in batch.events.values())
    windows = len(batch.iot_windows) + len(batch.web_windows)
    return 128 + 300 * (events + len(batch.dead_letters)) + 200 * windows


class JobBatchCoder(FastCoder):
    """``JobBatch`` <-> bytes (see the module docstring)."""

    def _create_impl(self) -> CallbackCoderImpl:
        return CallbackCoderImpl(
            _with_fallback(encode_job_batch), _decoding(decode_job_batch), job_batch_size
        )

    def is_deterministic(self) -> bool:
        return False  # dict order and JSON floats are stable, but nothing here needs it

    def to_type_hint(self) -> type[JobBatch]:
        return JobBatch

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


def register_coders() -> None:
    """Make Beam encode ``SourceBatch`` and ``JobBatch`` elements with the coders above."""
    registry.register_coder(SourceBatch, SourceBatchCoder)
    registry.register_coder(JobBatch, JobBatchCoder)


register_coders()
