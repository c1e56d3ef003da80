"""KPL-compatible record aggregation: many small user records in few Kinesis records, and back again.

In (producer): user records, each a partition key and its data (one encoded envelope).
Out: ``AggregatedRecord`` values in the Kinesis Producer Library's aggregation format (magic bytes,
a protobuf ``AggregatedRecord``, its MD5), each at most ``max_bytes`` of data, so that data plus the
record's partition key stay within the 1 MiB Kinesis record limit.
In (consumer): the data and partition key of one Kinesis record, aggregated or not.
Out: its user records, in order, each with its own partition key.

Nothing becomes a dead letter here. A user record too big for a Kinesis record of its own is refused
with ``ValueError`` (``sluice.edges.delivery.plan_delivery`` turns such records into ``too_large`` dead
letters before aggregating). A Kinesis record that looks aggregated (magic bytes and digest right)
but whose body is not a valid aggregate is returned whole, so the envelope decoder dead-letters its
bytes instead of this step dropping them.

The wire format and protobuf schema come from ``aws-kinesis-agg`` (AWS's own library, also read by
the KCL and Lambda's de-aggregation). Two of its conveniences are deliberately not used:
``RecordAggregator`` deep-copies every full record and silently loses a record that is too big for an
empty aggregate, and ``iter_deaggregate_records`` prints and drops the rest of a corrupt aggregate and
returns base64 data for aggregated records but raw bytes for plain ones.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_AGGREGATE_BYTES",
    "MAGIC",
    "MAX_KINESIS_RECORD_BYTES",
    "MAX_PARTITION_KEY_BYTES",
    "UserRecord",
    "aggregate",
    "aggregated_size",
    "deaggregate",
    "is_aggregated",
]

# aws_kinesis_agg's modules insert their own folder and site-packages at the front of sys.path when
# imported, which could shadow the project's modules; the path is restored right after.
_SAVED_PATH = list(sys.path)
try:
    import aws_kinesis_agg  # type: ignore[import-untyped]
    from aws_kinesis_agg.aggregator import AggRecord  # type: ignore[import-untyped]
    from aws_kinesis_agg.messages_pb2 import (  # type: ignore[import-untyped]
        AggregatedRecord as _AggregatedRecordMessage,
    )
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
finally:
    sys.path[:] = _SAVED_PATH

MAGIC: bytes = aws_kinesis_agg.MAGIC
DIGEST_BYTES: int = aws_kinesis_agg.DIGEST_SIZE
MAX_KINESIS_RECORD_BYTES = 1024 * 1024
"""Kinesis limit for one record: data plus partition key (UTF-8) bytes."""
MAX_PARTITION_KEY_BYTES = 256 * 4
"""A partition key is at most 256 characters, so at most 1 KiB of UTF-8."""
DEFAULT_AGGREGATE_BYTES = MAX_KINESIS_RECORD_BYTES - MAX_PARTITION_KEY_BYTES
"""Data bytes of one aggregate: whatever its partition key, data plus key fit in one record."""


class UserRecord(NamedTuple):
    """One record as the producer wrote it: its partition key and data (a named tuple: immutable,
    and made faster than a frozen dataclass; one per record put and per record read)."""

    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AggregatedRecord:
    """One Kinesis record carrying ``user_record_count`` consecutive user records.

    Its partition key is the first user record's (as the KPL does), so it routes to that key's shard.
    """

    partition_key: str
    data: bytes
    user_record_count: int


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def aggregated_size(partition_key: str, data: bytes) -> int:
    """Data bytes of an aggregate holding only this user record (framing, key table, record)."""
    key = len(partition_key.encode())
    key_entry = 1 + _varint_bytes(key) + key
    inner = 2 + 1 + _varint_bytes(len(data)) + len(data)  # key index 0, then the data field
    return len(MAGIC) + key_entry + 1 + _varint_bytes(inner) + inner + DIGEST_BYTES


def aggregate(
    records: Iterable[UserRecord], max_bytes: int = DEFAULT_AGGREGATE_BYTES
) -> Iterator[AggregatedRecord]:
    """Pack consecutive user records into aggregates of at most ``max_bytes`` data bytes, in order.

    Raises ``ValueError`` for a user record that does not fit in an aggregate of its own.
    """
    if not 0 < max_bytes <= aws_kinesis_agg.MAX_BYTES_PER_RECORD:
        raise ValueError(f"max_bytes must be in 1..{aws_kinesis_agg.MAX_BYTES_PER_RECORD}")
    current: Any = None
    for record in records:
        # Keys go in as bytes: the library sizes a key as bytes but remembers the keys it has
        # seen as given, so with str keys it charges every record for a new key-table entry and
        # packs a fifth fewer records (far fewer with long keys).
        key = record.partition_key.encode()
        if current is not None and current.add_user_record(key, record.data):
            continue
        if current is not None:
            yield _finish(current)
        size = aggregated_size(record.partition_key, record.data)
        if size > max_bytes:
            raise ValueError(f"user record of {size} aggregated bytes > {max_bytes}")
        current = AggRecord(max_bytes)
        if not current.add_user_record(key, record.data):  # pragma: no cover - sized above
            raise ValueError(f"user record of {size} aggregated bytes does not fit {max_bytes}")
    if current is not None:
        yield _finish(current)


def _finish(record: Any) -> AggregatedRecord:
    partition_key, _, data = record.get_contents()
    return AggregatedRecord(
        partition_key=bytes(partition_key).decode(),
        data=bytes(data),
        user_record_count=int(record.get_num_user_records()),
    )


def is_aggregated(data: bytes) -> bool:
    """True when ``data`` is framed as an aggregate: magic bytes, a body, and the body's MD5."""
    if len(data) <= len(MAGIC) + DIGEST_BYTES or not data.startswith(MAGIC):
        return False
    body, digest = data[len(MAGIC) : -DIGEST_BYTES], data[-DIGEST_BYTES:]
    return hashlib.md5(body).digest() == digest


def deaggregate(data: bytes, partition_key: str) -> list[UserRecord]:
    """The user records of one Kinesis record; a record that is not an aggregate is one user record."""
    if not is_aggregated(data):
        return [UserRecord(partition_key, data)]
    message = _AggregatedRecordMessage()
    try:
        message.ParseFromString(data[len(MAGIC) : -DIGEST_BYTES])
        keys = list(message.partition_key_table)
        return [
            UserRecord(str(keys[record.partition_key_index]), bytes(record.data))
            for record in message.records
        ]
    except (DecodeError, IndexError):
        # Framed like an aggregate but not one: pass the bytes on whole so a later step can
        # dead-letter them with their content, as the KPL's consumers do.
        return [UserRecord(partition_key, data)]
