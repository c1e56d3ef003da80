"""Kinesis events of a Lambda event source mapping -> the stages' input (``sluice.stream.lambda_events``).

Events are built here in the shape AWS delivers them (``eventID`` = ``<shard>:<sequence>``,
base64 ``data``, arrival in epoch seconds); KPL aggregates come from the edges' own aggregator.
"""

from __future__ import annotations

import base64
from typing import Any

from sluice.stream.kpl import UserRecord, aggregate
from sluice.stream.lambda_events import shard_records

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/sluice-dev-events"


def _record(shard: str, sequence: int, data: bytes | str, arrival: float = 1e9) -> dict[str, Any]:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {
        "eventID": f"{shard}:{sequence}",
        "eventSourceARN": ARN,
        "kinesis": {
            "data": encoded,
            "sequenceNumber": str(sequence),
            "partitionKey": "k",
            "approximateArrivalTimestamp": arrival,
        },
    }


def test_records_group_by_shard_in_delivery_order_and_kpl_is_unpacked() -> None:
    # GIVEN two plain records of shard 0, one aggregate of three user records of shard 1
    (packed,) = aggregate([UserRecord("k", f"u{n}".encode()) for n in range(3)])
    event = [
        _record("shardId-000000000000", 10, b"a", 1.5),
        _record("shardId-000000000001", 7, packed.data),
        _record("shardId-000000000000", 12, b"b", 2.5),
    ]
    # WHEN they are read
    first, second = shard_records(event)
    # THEN each shard keeps its own order, positions and arrivals
    assert (first.shard_id, first.stream_arn, first.sequence_numbers) == (
        "shardId-000000000000",
        ARN,
        ("10", "12"),
    )
    assert [(r.sequence, r.sub_sequence, r.arrival, r.data) for r in first.records] == [
        (10, 0, 1.5, b"a"),
        (12, 0, 2.5, b"b"),
    ]
    assert [(r.sequence, r.sub_sequence, r.data) for r in second.records] == [
        (7, 0, b"u0"),
        (7, 1, b"u1"),
        (7, 2, b"u2"),
    ]
    # AND what is after a committed position is found by sequence number
    assert first.first_after(None) == "10" and first.first_after(10) == "12"
    assert first.first_after(12) is None
    assert [r.data for r in first.records_after(10)] == [b"b"]


def test_data_that_is_not_base64_passes_on_as_its_text() -> None:
    (shard,) = shard_records([_record("shardId-000000000000", 1, "not base64!")])
    assert [r.data for r in shard.records] == [b"not base64!"]


def test_an_empty_event_has_no_shards() -> None:
    assert shard_records([]) == []
