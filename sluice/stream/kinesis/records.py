"""What a Kinesis read emits: the user records of one GetRecords call, as one batch.

In: the ``Records`` of one GetRecords response (KPL aggregates among them), the shard they came from
and the last sequence number of that shard's previous batch.
Out: a ``SourceBatch`` holding the call's records de-aggregated (KPL) into ``SourceRecord`` values
in shard order, or None when the call returned no record.

Dead letters: none here. Record bytes pass on untouched (a KPL aggregate that does not parse passes
on whole, see ``sluice.stream.kpl``); the parse stage dead-letters what it cannot decode.

Why batches: Python pays per element, so a source emits one element per call rather than per
record; and a batch names the previous batch of its shard (``previous_sequence``), so a sink can
commit positions only where everything before them was written.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sluice.stream.kpl import deaggregate

__all__ = ["SourceBatch", "SourceRecord", "build_batch"]


class SourceRecord(NamedTuple):
    """One user record as the producer wrote it, with where and when it landed in Kinesis (a
    named tuple: immutable, and made faster than a frozen dataclass; one per record read)."""

    sequence_number: str
    """Sequence number of the Kinesis record carrying it (shared by a KPL aggregate's records)."""
    sub_sequence: int
    """Index within a KPL aggregate; 0 for a plain record."""
    arrival: float
    """ApproximateArrivalTimestamp of the Kinesis record, epoch seconds."""
    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """The records of one GetRecords call on one shard, in shard order (never empty of Kinesis records)."""

    stream: str
    shard_id: str
    records: tuple[SourceRecord, ...]
    first_sequence: str
    last_sequence: str
    previous_sequence: str | None
    """``last_sequence`` of the previous batch of this shard in this reader run; None for the first."""
    max_arrival: float
    millis_behind_latest: int


def _epoch_seconds(value: Any) -> float:
    # Kinesis sends epoch seconds; the Beam job's client keeps them raw (see
    # ``beam_jobs.kinesis_client``), other clients hand over datetimes, and a string is read as
    # epoch seconds, ISO 8601 or RFC 822, the timestamp formats of AWS responses.
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return _text_epoch_seconds(value)
    return float(value)  # another number type (Decimal)


def _text_epoch_seconds(text: str) -> float:
    # A time without a zone is local time, as botocore's parser reads it.
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return email.utils.parsedate_to_datetime(text).timestamp()


def build_batch(
    stream: str,
    shard_id: str,
    kinesis_records: Iterable[Mapping[str, Any]],
    previous_sequence: str | None,
    millis_behind_latest: int,
) -> SourceBatch | None:
    """The batch of one GetRecords response's ``Records`` (KPL aggregates unpacked); None when empty."""
    records: list[SourceRecord] = []
    first = last = None
    max_arrival = float("-inf")
    for record in kinesis_records:
        sequence: str = record["SequenceNumber"]
        arrival = _epoch_seconds(record["ApproximateArrivalTimestamp"])
        first = first or sequence
        last = sequence
        max_arrival = max(max_arrival, arrival)
        records.extend(
            SourceRecord(sequence, index, arrival, user.partition_key, user.data)
            for index, user in enumerate(deaggregate(record["Data"], record["PartitionKey"]))
        )
    if first is None or last is None:
        return None
    return SourceBatch(
        stream=stream,
        shard_id=shard_id,
        records=tuple(records),
        first_sequence=first,
        last_sequence=last,
        previous_sequence=previous_sequence,
        max_arrival=max_arrival,
        millis_behind_latest=millis_behind_latest,
    )
