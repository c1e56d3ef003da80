"""The Kinesis reader without Beam: shard rules, failure kinds, batches, and the reader over a fake client.

``sluice.stream.kinesis`` imports neither Beam nor an AWS SDK; these tests need neither, except
where they check how botocore's own exceptions are classified (``beam_jobs.kinesis_client``).
The reader against a moto server, driven by the Beam restriction tracker, and ``ReadFromKinesis``
itself are tested in ``test_kinesis_source``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from beam_jobs.kinesis_client import BOTOCORE_ERRORS
from sluice.stream.kinesis.failures import Backoff, ClientErrors, KinesisReadError, failure_kind
from sluice.stream.kinesis.positions import ShardClaim, StartPosition, StreamRestriction
from sluice.stream.kinesis.reader import KinesisStreamReader
from sluice.stream.kinesis.records import SourceBatch, build_batch
from sluice.stream.kinesis.settings import KinesisReadSettings
from sluice.stream.kinesis.shards import (
    ShardInfo,
    ancestors,
    iterator_request,
    readable_shards,
    stream_watermark,
)
from sluice.stream.kpl import UserRecord, aggregate

SHARD_0 = "shardId-000000000000"


# Shard rules ---------------------------------------------------------------------------------------


def _graph() -> dict[str, ShardInfo]:
    # 0 split into 2 and 3; 3 merged with 1 into 4.
    return {
        "s0": ShardInfo("s0", (), closed=True),
        "s1": ShardInfo("s1", (), closed=True),
        "s2": ShardInfo("s2", ("s0",), closed=False),
        "s3": ShardInfo("s3", ("s0",), closed=True),
        "s4": ShardInfo("s4", ("s3", "s1"), closed=False),
    }


@pytest.mark.parametrize(
    ("done", "readable"),
    [
        (set(), ["s0", "s1"]),
        ({"s0"}, ["s1", "s2", "s3"]),
        ({"s0", "s3"}, ["s1", "s2"]),  # s4 waits for its other parent
        ({"s0", "s1", "s3"}, ["s2", "s4"]),
    ],
)
def test_children_are_read_only_after_all_their_parents(
    done: set[str], readable: list[str]
) -> None:
    assert readable_shards(_graph(), done) == readable


def test_a_parent_gone_from_the_listing_counts_as_read() -> None:
    # GIVEN a child whose parent aged out of the stream (retention)
    shards = {"s2": ShardInfo("s2", ("s0",), closed=False)}
    # THEN the child is readable
    assert readable_shards(shards, set()) == ["s2"]


def test_ancestors_follow_split_and_merge_parents() -> None:
    assert ancestors(["s4"], _graph()) == {"s3", "s1", "s0"}
    assert ancestors(["s2", "unknown"], _graph()) == {"s0"}


@pytest.mark.parametrize(
    ("position", "start", "after_saved", "expected"),
    [
        ("42", StartPosition(kind="LATEST"), False, ("AFTER_SEQUENCE_NUMBER", "42")),
        (None, StartPosition(after_sequence={"s2": "7"}), False, ("AFTER_SEQUENCE_NUMBER", "7")),
        ("9", StartPosition(after_sequence={"s2": "7"}), False, ("AFTER_SEQUENCE_NUMBER", "9")),
        (None, StartPosition(kind="LATEST"), True, ("TRIM_HORIZON", None)),
        (None, StartPosition(kind="TRIM_HORIZON"), False, ("TRIM_HORIZON", None)),
    ],
)
def test_iterator_request(
    position: str | None, start: StartPosition, after_saved: bool, expected: tuple[str, str | None]
) -> None:
    request = iterator_request("s2", position, start, start.start_timestamp(0.0), after_saved)
    assert (request["ShardIteratorType"], request.get("StartingSequenceNumber")) == expected


def test_latest_and_at_timestamp_read_from_a_pinned_time() -> None:
    # GIVEN LATEST resolved when the restriction was made, and an explicit AT_TIMESTAMP
    latest = StartPosition(kind="LATEST").start_timestamp(now=1_700_000_000.5)
    at = StartPosition(kind="AT_TIMESTAMP", timestamp=datetime(2026, 1, 2)).start_timestamp(now=0)
    # THEN both start shards without a position AT_TIMESTAMP (naive timestamps are UTC)
    assert iterator_request("s", None, StartPosition(), latest, False) == {
        "ShardIteratorType": "AT_TIMESTAMP",
        "Timestamp": datetime.fromtimestamp(1_700_000_000.5, UTC),
    }
    assert at == datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    assert StartPosition().start_timestamp(now=5.0) is None


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=8))
def test_watermark_is_the_slowest_shard(progress: list[float]) -> None:
    assert stream_watermark(progress) == min(progress)
    assert stream_watermark([*progress, None]) is None
    assert stream_watermark([]) is None


# Failures ------------------------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.001, max_value=1),
    cap=st.floats(min_value=0.001, max_value=30),
    seed=st.integers(),
)
def test_backoff_stays_within_its_exponential_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = Backoff(base, cap).delay(attempt, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2 ** (attempt - 1))


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetRecords",
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_client_error("ProvisionedThroughputExceededException", 400), "throttled"),
        (_client_error("LimitExceededException", 400), "throttled"),
        (_client_error("InternalFailure", 500), "transient"),
        (_client_error("SomethingNew", 503), "transient"),
        (EndpointConnectionError(endpoint_url="http://x"), "transient"),
        (_client_error("ResourceNotFoundException", 400), None),
        (_client_error("AccessDeniedException", 400), None),
    ],
)
def test_failure_kind(error: Exception, kind: str | None) -> None:
    assert failure_kind(error, BOTOCORE_ERRORS.network) == kind


# Batches -------------------------------------------------------------------------------------------


def test_build_batch_unpacks_kpl_aggregates_in_order() -> None:
    # GIVEN a plain record and a KPL aggregate of three user records with their own keys
    (aggregated,) = aggregate([UserRecord(f"user-{i}", b"u%d" % i) for i in range(3)])
    arrival = datetime(2026, 5, 1, tzinfo=UTC)
    response = [
        {"SequenceNumber": "10", "PartitionKey": "p", "Data": b"plain", "ApproximateArrivalTimestamp": arrival},
        {"SequenceNumber": "11", "PartitionKey": aggregated.partition_key, "Data": aggregated.data,
         "ApproximateArrivalTimestamp": arrival},
    ]  # fmt: skip
    # WHEN it becomes a batch
    batch = build_batch("s", SHARD_0, response, previous_sequence="9", millis_behind_latest=5)
    # THEN every user record is there in order, with its key, Kinesis sequence and index
    assert batch is not None
    assert [
        (r.sequence_number, r.sub_sequence, r.partition_key, r.data) for r in batch.records
    ] == [
        ("10", 0, "p", b"plain"),
        ("11", 0, "user-0", b"u0"),
        ("11", 1, "user-1", b"u1"),
        ("11", 2, "user-2", b"u2"),
    ]
    assert (batch.first_sequence, batch.last_sequence, batch.previous_sequence) == ("10", "11", "9")
    assert batch.max_arrival == arrival.timestamp()
    # AND an empty response is no batch
    assert build_batch("s", SHARD_0, [], None, 0) is None


@pytest.mark.parametrize(
    "arrival",
    [
        1_777_593_600.25,  # epoch seconds, as the Beam job's client keeps them
        datetime(2026, 5, 1, 0, 0, 0, 250_000, tzinfo=UTC),  # botocore's default parsing
        "1777593600.25",
        "2026-05-01T00:00:00.25Z",
        "2026-05-01T02:00:00.250+02:00",
    ],
)
def test_arrival_times_are_epoch_seconds_whatever_the_client_hands_over(arrival: Any) -> None:
    record = {"SequenceNumber": "1", "PartitionKey": "p", "Data": b"x"}
    batch = build_batch("s", SHARD_0, [record | {"ApproximateArrivalTimestamp": arrival}], None, 0)
    assert batch is not None
    assert batch.max_arrival == batch.records[0].arrival == 1_777_593_600.25
    rfc_822 = {"ApproximateArrivalTimestamp": "Fri, 01 May 2026 00:00:00 GMT"}
    rfc_batch = build_batch("s", SHARD_0, [record | rfc_822], None, 0)
    assert rfc_batch is not None and rfc_batch.max_arrival == 1_777_593_600.0


# The reader over a client of another SDK -----------------------------------------------------------


class FakeSdkError(Exception):
    """A failed call of a made-up SDK; with a code, it carries a service response like botocore's."""

    def __init__(self, code: str | None = None, status: int = 400) -> None:
        super().__init__(code or "no response")
        if code is not None:
            self.response = {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }


class FakeNetworkError(FakeSdkError):
    """The made-up SDK's connection failure: no response."""


FAKE_ERRORS = ClientErrors(failed_call=(FakeSdkError,), network=(FakeNetworkError,))


class FakeKinesis:
    """One open shard holding ``records``; GetRecords raises the queued ``failures`` first."""

    def __init__(self, records: list[dict[str, Any]], failures: list[Exception]) -> None:
        self.records = records
        self.failures = failures
        self.closed = False

    def list_shards(self, **request: Any) -> Mapping[str, Any]:
        return {"Shards": [{"ShardId": SHARD_0, "SequenceNumberRange": {}}]}

    def get_shard_iterator(
        self, *, StreamName: str, ShardId: str, ShardIteratorType: str, **position: Any
    ) -> Mapping[str, Any]:
        return {"ShardIterator": position.get("StartingSequenceNumber", "0")}

    def get_records(self, *, ShardIterator: str, Limit: int) -> Mapping[str, Any]:
        if self.failures:
            raise self.failures.pop(0)
        after = int(ShardIterator)
        page = [r for r in self.records if int(r["SequenceNumber"]) > after][:Limit]
        next_iterator = page[-1]["SequenceNumber"] if page else ShardIterator
        return {"Records": page, "MillisBehindLatest": 0, "NextShardIterator": next_iterator}

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class CountingCounters:
    def __init__(self) -> None:
        self.counts = Counter[str]()

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def observe(self, name: str, value: int) -> None:
        pass


def _records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "SequenceNumber": str(i),
            "PartitionKey": f"k{i}",
            "Data": b"r-%d" % i,
            "ApproximateArrivalTimestamp": 1_700_000_000.0 + i,
        }
        for i in range(1, n + 1)
    ]


def _reader(client: FakeKinesis, counters: CountingCounters | None = None) -> KinesisStreamReader:
    clock = FakeClock()
    return KinesisStreamReader(
        client,
        KinesisReadSettings(stream_name="s", backoff_base_seconds=0.01, backoff_cap_seconds=0.05),
        errors=FAKE_ERRORS,
        counters=counters,
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
    )


def _read(reader: KinesisStreamReader, rounds: int) -> list[SourceBatch]:
    claims: list[ShardClaim] = []

    def claim(shard_claim: ShardClaim) -> bool:
        claims.append(shard_claim)
        return True

    batches: list[SourceBatch] = []
    for _ in range(rounds):
        restriction = StreamRestriction(
            positions=tuple((c.shard_id, c.sequence) for c in claims[-1:] if c.sequence)
        )
        batches.extend(reader.read_round(restriction, claim))
    return batches


def test_network_errors_the_runtime_names_are_retried_and_counted() -> None:
    # GIVEN a client of another SDK whose first two GetRecords calls fail at the network level
    client = FakeKinesis(_records(3), failures=[FakeNetworkError(), FakeNetworkError()])
    counters = CountingCounters()
    # WHEN the reader, told which of that SDK's exceptions are network errors, reads a few rounds
    batches = _read(_reader(client, counters), rounds=4)
    # THEN both failures were retried as transient, and the records came out once
    assert [r.data for b in batches for r in b.records] == [b"r-1", b"r-2", b"r-3"]
    assert counters.counts["transient_errors"] == 2
    assert counters.counts["records"] == 3


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        # a service error that retries cannot fix
        (FakeSdkError("AccessDeniedException"), KinesisReadError),
        # a failed call of that SDK without a response, and not a network error
        (FakeSdkError(), KinesisReadError),
        # no failed call at all (a bug): passes through unchanged
        (KeyError("bug"), KeyError),
    ],
)
def test_failures_retries_cannot_fix_end_the_read(
    failure: Exception, raised: type[Exception]
) -> None:
    # GIVEN a client whose first GetRecords call fails
    reader = _reader(FakeKinesis(_records(3), failures=[failure]))
    # WHEN the reader polls THEN the read fails with the reader's error, or the bug's own
    with pytest.raises(raised) as caught:
        _read(reader, rounds=1)
    if raised is KinesisReadError:
        assert caught.value.__cause__ is failure
