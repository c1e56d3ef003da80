"""Kinesis records as a Lambda event source mapping delivers them, turned into the stages' input.

In: the ``Records`` of a Lambda Kinesis event (each ``{"eventID": "shardId-...:<sequence>",
"eventSourceARN", "kinesis": {"data": base64, "sequenceNumber", "partitionKey",
"approximateArrivalTimestamp"}}``), in the order the mapping delivered them.
Out: one ``ShardRecords`` per shard (a mapping invokes once per shard, but nothing here assumes
it): the Kinesis records' sequence numbers in order, and their user records de-aggregated (KPL)
into ``InputRecord`` values, as the job's reader makes them (``sluice.stream.kinesis.records``).

Dead letters: none here. A record whose ``data`` is not base64 passes on as its text's bytes, so
the decode stage dead-letters it (``invalid_json``) instead of the batch failing; a KPL aggregate
that does not parse passes on whole (``sluice.stream.kpl``).
Why a module of its own: the Lambda's handler stays a few lines, and a test (or a local runner)
builds the very same values from records read with GetRecords.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.stream.kinesis.records import build_batch
from sluice.stream.stages import InputRecord

__all__ = ["ShardRecords", "shard_records"]


@dataclass(frozen=True, slots=True)
class ShardRecords:
    """One shard's part of an invocation: Kinesis records in order, and their user records."""

    shard_id: str
    stream_arn: str
    sequence_numbers: tuple[str, ...]
    """Kinesis sequence numbers as delivered (the ``itemIdentifier`` of a batch item failure)."""
    records: tuple[InputRecord, ...]
    """User records in shard order; a KPL aggregate's records share its sequence number."""

    def first_after(self, position: int | None) -> str | None:
        """The first sequence number of this batch after ``position`` (None: after nothing)."""
        for sequence in self.sequence_numbers:
            if position is None or int(sequence) > position:
                return sequence
        return None

    def records_after(self, position: int | None) -> list[InputRecord]:
        if position is None:
            return list(self.records)
        return [r for r in self.records if r.sequence > position]


def _data(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode("utf-8", "backslashreplace")


def _shard_of(record: Mapping[str, Any]) -> str:
    # eventID is "<shard id>:<sequence number>" for Kinesis (the mapping's own format).
    return str(record["eventID"]).rpartition(":")[0]


def shard_records(event_records: Iterable[Mapping[str, Any]]) -> list[ShardRecords]:
    """The event's records grouped by shard, in first-seen order, each group in delivery order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    arns: dict[str, str] = {}
    for record in event_records:
        shard = _shard_of(record)
        grouped.setdefault(shard, []).append(record)
        arns.setdefault(shard, str(record.get("eventSourceARN", "")))
    out: list[ShardRecords] = []
    for shard, records in grouped.items():
        out.append(_one_shard(shard, arns[shard], records))
    return out


def _one_shard(shard: str, arn: str, records: Sequence[Mapping[str, Any]]) -> ShardRecords:
    kinesis = [r["kinesis"] for r in records]
    batch = build_batch(
        arn.rpartition("/")[2],
        shard,
        (
            {
                "SequenceNumber": k["sequenceNumber"],
                "ApproximateArrivalTimestamp": k["approximateArrivalTimestamp"],
                "Data": _data(k["data"]),
                "PartitionKey": k.get("partitionKey", ""),
            }
            for k in kinesis
        ),
        None,
        0,
    )
    users = batch.records if batch is not None else ()
    return ShardRecords(
        shard_id=shard,
        stream_arn=arn,
        sequence_numbers=tuple(str(k["sequenceNumber"]) for k in kinesis),
        records=tuple(
            InputRecord(int(r.sequence_number), r.sub_sequence, r.arrival, r.data) for r in users
        ),
    )
