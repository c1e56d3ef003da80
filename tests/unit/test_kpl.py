"""KPL aggregation: lossless round trips, size bounds, compatibility with AWS's own library."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.stream.kpl import (
    DEFAULT_AGGREGATE_BYTES,
    MAGIC,
    MAX_KINESIS_RECORD_BYTES,
    UserRecord,
    aggregate,
    aggregated_size,
    deaggregate,
    is_aggregated,
)

user_records = st.lists(
    st.builds(
        UserRecord,
        partition_key=st.text(min_size=1, max_size=256),
        data=st.binary(max_size=3000),
    ),
    max_size=60,
)


def frame(body: bytes) -> bytes:
    """Wrap bytes the way an aggregate is framed: magic, body, MD5 of the body."""
    return MAGIC + body + hashlib.md5(body).digest()


@given(records=user_records, max_bytes=st.integers(min_value=5000, max_value=20_000))
@settings(max_examples=150, deadline=None)
def test_aggregate_then_deaggregate_returns_the_same_records_in_order(
    records: list[UserRecord], max_bytes: int
) -> None:
    # GIVEN any user records WHEN aggregated into records of at most max_bytes and read back
    aggregates = list(aggregate(records, max_bytes))
    restored = [r for agg in aggregates for r in deaggregate(agg.data, agg.partition_key)]

    # THEN nothing is lost, changed or reordered, and every aggregate respects the bound
    assert restored == records
    assert sum(agg.user_record_count for agg in aggregates) == len(records)
    assert all(len(agg.data) <= max_bytes and is_aggregated(agg.data) for agg in aggregates)
    assert all(agg.partition_key for agg in aggregates)


@given(partition_key=st.text(min_size=1, max_size=256), data=st.binary(max_size=70_000))
@settings(max_examples=50, deadline=None)
def test_aggregated_size_is_the_exact_size_of_a_one_record_aggregate(
    partition_key: str, data: bytes
) -> None:
    (agg,) = aggregate([UserRecord(partition_key, data)])
    assert len(agg.data) == aggregated_size(partition_key, data)


def test_default_aggregates_are_full_yet_within_one_kinesis_record_with_any_partition_key() -> None:
    # GIVEN 12,000 records of 200 bytes under a maximal partition key (256 four-byte characters)
    key = "\U0001f600" * 256
    records = [UserRecord(key, os.urandom(200)) for _ in range(12_000)]

    # WHEN aggregated with the defaults
    aggregates = list(aggregate(records))

    # THEN data plus partition key of every aggregate fit the 1 MiB Kinesis limit
    assert all(
        len(a.data) + len(a.partition_key.encode()) <= MAX_KINESIS_RECORD_BYTES for a in aggregates
    )
    # AND the aggregates are full: the key is charged once per aggregate, not once per record
    assert len(aggregates) == 3
    assert all(len(a.data) > 0.99 * DEFAULT_AGGREGATE_BYTES for a in aggregates[:-1])


def test_a_record_too_big_for_an_aggregate_of_its_own_is_refused() -> None:
    with pytest.raises(ValueError, match="aggregated bytes"):
        list(aggregate([UserRecord("k", b"x" * 5000)], max_bytes=4096))
    with pytest.raises(ValueError, match="max_bytes"):
        list(aggregate([], max_bytes=MAX_KINESIS_RECORD_BYTES + 1))


@pytest.mark.parametrize(
    "data",
    [
        b'{"event_id": "plain json"}',
        b"",
        MAGIC,
        MAGIC + b"\x00" * 40,  # magic but the digest does not match
        frame(b"\xff\xff\xff\xff not protobuf"),  # framed, body undecodable
        frame(bytes.fromhex("0a01611a0408051a00")),  # framed, record points at key index 5 of 1
    ],
    ids=["json", "empty", "magic-only", "bad-digest", "bad-protobuf", "bad-key-index"],
)
def test_anything_that_is_not_a_valid_aggregate_passes_through_whole(data: bytes) -> None:
    # GIVEN a Kinesis record that is not (or not validly) aggregated WHEN de-aggregated
    # THEN it is one user record with its own bytes and key: a later step dead-letters it if bad
    assert deaggregate(data, "pk") == [UserRecord("pk", data)]


def test_records_we_aggregate_are_read_by_the_aws_library() -> None:
    from aws_kinesis_agg.deaggregator import deaggregate_records

    # GIVEN aggregates written by sluice.stream.kpl
    records = [UserRecord(f"device-{i % 7}", f"payload {i}".encode()) for i in range(500)]
    aggregates = list(aggregate(records, 4000))

    # WHEN the AWS library de-aggregates them in Lambda's Kinesis event shape
    lambda_records = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": agg.partition_key,
                "sequenceNumber": str(i),
                "data": base64.b64encode(agg.data),
                "approximateArrivalTimestamp": 1.0,
            }
        }
        for i, agg in enumerate(aggregates)
    ]
    restored = [
        UserRecord(r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"]))
        for r in deaggregate_records(lambda_records)
    ]

    # THEN it finds the same records
    assert restored == records


def test_aggregates_of_the_aws_library_are_read_by_us() -> None:
    from aws_kinesis_agg.aggregator import RecordAggregator

    # GIVEN records aggregated by the AWS library
    aggregator = RecordAggregator()
    records = [UserRecord(f"k{i % 3}", os.urandom(100)) for i in range(300)]
    for record in records:
        assert aggregator.add_user_record(record.partition_key, record.data) is None
    partition_key, _, data = aggregator.clear_and_get().get_contents()

    # WHEN / THEN sluice.stream.kpl de-aggregates them
    assert deaggregate(data, partition_key) == records
