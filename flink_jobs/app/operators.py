"""The job's keyed, timed steps, in Java (``io.sluice.flink.ops`` in the shaded jar), applied to
PyFlink streams through py4j, and the frames they emit, read back in Python.

``batch_records``: a shard's records buffered in keyed state and emitted as one frame when
``max_records`` are buffered, ``max_millis`` after the first, or before the watermark passes the
first one's arrival (``BatchRecords``). ``close_windows``: a window's partial aggregates kept in
keyed state and emitted together once the watermark passes the window's close time; a partial
arriving later is emitted alone, marked late (``CloseWindows``).
Why Java: PyFlink 2.2 registers the timers of a Python function through the task's mailbox after
the bundle that made them, so a checkpoint can hold a Python function's state without its timers.
After a restore from it, such a key's timer never fires: a window never written, a buffer never
flushed (tests/flink/test_app_kinesis.py's TaskManager kill found windows missing). Java timers
are checkpointed with their state; the Python functions after these steps keep no state.

Frames (big-endian, as ``Frames.java`` writes them): an int count, then the items. A record is the
sequence number (int length + UTF-8), the sub-sequence number (int; -1: a whole Kinesis record,
possibly a KPL aggregate), the arrival time (double, epoch seconds) and the data (int length +
bytes); a state is an int length + bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from sluice.core.errors import ConfigError
from sluice.stream.kpl import deaggregate
from sluice.stream.stages import InputRecord

__all__ = [
    "FramedRecord",
    "batch_records",
    "batch_user_records",
    "close_windows",
    "read_records",
    "read_states",
]

JAVA_PACKAGE = "io.sluice.flink.ops"
_INT = struct.Struct(">i")
T = TypeVar("T")
_RECORD_MIDDLE = struct.Struct(">id")  # sub-sequence, arrival


class FramedRecord(NamedTuple):
    sequence: str
    sub: int
    """-1: a whole Kinesis record (maybe a KPL aggregate), else the user record's place in it."""
    arrival: float
    data: bytes


def _operators() -> Any:
    from pyflink.java_gateway import get_gateway

    package: Any = get_gateway().jvm
    for part in JAVA_PACKAGE.split("."):
        package = getattr(package, part)
    return package.SluiceOperators


def _wrap(call: Any, *args: Any) -> Any:
    from pyflink.datastream.data_stream import DataStream

    try:
        return DataStream(call(*args))
    except Exception as error:  # noqa: BLE001 - py4j: the class is missing from the job's jars
        raise ConfigError(
            f"{JAVA_PACKAGE}.SluiceOperators is not on the job's class path (add "
            "build/flink/pyflink-dependencies.jar: run 'make flink-jar'): "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else repr(error)}"
        ) from None


def batch_records(stream: Any, max_records: int, max_millis: int, *, deduplicate: bool) -> Any:
    """Row(shard, frame of records) per batch of a shard's records (``BatchRecords``)."""
    operators = _operators()
    return _wrap(
        operators.batchRecords, stream._j_data_stream, max_records, max_millis, deduplicate
    )


def close_windows(stream: Any, table: str) -> Any:
    """Row(key, late, frame of partial states) per closed window or late partial."""
    return _wrap(_operators().closeWindows, stream._j_data_stream, table)


def _sized(view: memoryview, at: int) -> tuple[bytes, int]:
    """The int-length-prefixed bytes at ``at``, and where the next item starts."""
    (length,) = _INT.unpack_from(view, at)
    return bytes(view[at + 4 : at + 4 + length]), at + 4 + length


def _items(frame: bytes, read: Callable[[memoryview, int], tuple[T, int]]) -> list[T]:
    """The items of a count-prefixed frame, each read by ``read(view, at) -> (item, next at)``."""
    view = memoryview(frame)
    (count,) = _INT.unpack_from(view, 0)
    at, out = 4, []
    for _ in range(count):
        item, at = read(view, at)
        out.append(item)
    return out


def _record(view: memoryview, at: int) -> tuple[FramedRecord, int]:
    sequence, at = _sized(view, at)
    sub, arrival = _RECORD_MIDDLE.unpack_from(view, at)
    data, at = _sized(view, at + _RECORD_MIDDLE.size)
    return FramedRecord(sequence.decode(), sub, arrival, data), at


def read_records(frame: bytes) -> list[FramedRecord]:
    """The records of a ``batch_records`` frame, in the order they were buffered."""
    return _items(frame, _record)


def read_states(frame: bytes) -> list[bytes]:
    """The partial states of a ``close_windows`` frame."""
    return _items(frame, _sized)


def batch_user_records(frame: bytes) -> list[InputRecord]:
    """A ``batch_records`` frame as the stages take it: whole Kinesis records de-aggregated (KPL),
    each position (sequence, sub-sequence) once, in sequence order."""
    records: dict[tuple[int, int], InputRecord] = {}
    for record in read_records(frame):
        sequence = int(record.sequence)
        if record.sub < 0:
            for sub, user in enumerate(deaggregate(record.data, "")):
                position = (sequence, sub)
                records.setdefault(position, InputRecord(sequence, sub, record.arrival, user.data))
        else:
            position = (sequence, record.sub)
            records.setdefault(
                position, InputRecord(sequence, record.sub, record.arrival, record.data)
            )
    return [records[position] for position in sorted(records)]
