"""KinesisPublisher against a real moto server, with faults injected on the wire by a proxy.

Every test reads the stream back (``kinesis_reader``) and the dead-letter destination, and checks the
delivery promise: every event id arrives at least once, none is lost, and a duplicate is always the
same bytes under the same id.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from faults import FaultProxy
from kinesis_reader import StreamContents, read_stream

from edge_lambdas.shared.publisher import (
    DeadLetterDeliveryError,
    KinesisPublisher,
    S3DeadLetterSink,
    SqsDeadLetterSink,
)
from sluice.core.contracts import DeadLetter, Envelope, ErrorType, IotReading
from sluice.core.retry import BackoffPolicy
from sluice.stream.envelopes import encode, wrap_reading

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)
PREFIX = "dead-letters/edge/"


def readings(count: int, devices: int = 20, *, padding: int = 0) -> list[Envelope]:
    return [
        wrap_reading(
            IotReading(
                device_id=f"device-{i % devices:03d}",
                event_time=T0 + timedelta(seconds=i),
                metrics={"temperature": 20 + i % 7, "humidity": 40 + i % 11},
                attributes={"padding": "x" * padding} if padding else {},
                message_id=f"m-{i}",
            ),
            T0,
        )
        for i in range(count)
    ]


def publisher(
    stream: str,
    sink: Any,
    *,
    aggregation: bool = True,
    read_timeout: float = 5.0,
    budget: float = 1.0,
) -> KinesisPublisher:
    """Built after the fault proxy (if any) is in place: the client reads AWS_ENDPOINT_URL then."""
    return KinesisPublisher(
        stream,
        sink,
        aggregation=aggregation,
        retry=BackoffPolicy(
            base_seconds=0.01, cap_seconds=0.05, max_attempts=6, max_elapsed_seconds=budget
        ),
        read_timeout=read_timeout,
        rng=random.Random(7),
    )


def assert_nothing_lost(
    sent: list[Envelope], contents: StreamContents, dead: list[DeadLetter]
) -> None:
    """Every envelope is on the stream or dead-lettered; a repeat is the same bytes, same id."""
    expected = {e.event_id: encode(e) for e in sent}
    seen: dict[str, set[bytes]] = defaultdict(set)
    for record in contents.user_records:
        envelope = Envelope.model_validate_json(record.data)
        seen[envelope.event_id].add(record.data)
    for letter in dead:
        envelope = Envelope.model_validate_json(letter.raw)
        seen[envelope.event_id].add(letter.raw.encode())
    assert set(seen) == set(expected)
    for event_id, copies in seen.items():
        assert copies == {expected[event_id]}, f"{event_id} arrived with different bytes"
    assert not contents.undecodable


def s3_dead_letters(s3: Any, bucket: str) -> list[DeadLetter]:
    letters = []
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        letters.extend(DeadLetter.model_validate_json(line) for line in body.splitlines())
    return letters


def sqs_dead_letters(sqs: Any, queue_url: str) -> list[DeadLetter]:
    letters = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return letters
        letters.extend(DeadLetter.model_validate_json(m["Body"]) for m in messages)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def test_aggregated_publish_delivers_every_envelope_once_in_few_records(
    aws_env: str, stream: str, dead_letter_bucket: str, kinesis: Any, s3: Any
) -> None:
    # GIVEN 2,000 readings from 20 devices and an aggregating publisher
    envelopes = readings(2000)
    sink = S3DeadLetterSink(dead_letter_bucket, PREFIX)

    # WHEN they are published
    report = publisher(stream, sink).publish(envelopes)

    # THEN each arrives exactly once, packed into a handful of Kinesis records, in one call
    contents = read_stream(kinesis, stream)
    assert report.sent == 2000 and report.failed_to_dead_letter == 0 and report.attempts == 1
    assert report.kinesis_records == len(contents.kinesis_records) <= 2
    assert contents.event_ids == {e.event_id: 1 for e in envelopes}
    assert {r.partition_key for r in contents.user_records} == {e.partition_key for e in envelopes}
    assert s3_dead_letters(s3, dead_letter_bucket) == []


def test_unaggregated_publish_sends_one_record_per_envelope_in_calls_of_at_most_500(
    stream: str, dead_letter_bucket: str, kinesis: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN 1,200 readings and a publisher without aggregation
    envelopes = readings(1200)

    # WHEN they are published
    report = publisher(
        stream, S3DeadLetterSink(dead_letter_bucket, PREFIX), aggregation=False
    ).publish(envelopes)

    # THEN three calls of at most 500 entries carried one Kinesis record per envelope
    assert [len(call.entries) for call in fault_proxy.calls] == [500, 500, 200]
    contents = read_stream(kinesis, stream)
    assert report.kinesis_records == report.sent == len(contents.kinesis_records) == 1200
    assert contents.event_ids == {e.event_id: 1 for e in envelopes}


def test_partial_failure_retries_only_the_failed_entries_in_their_order(
    stream: str, dead_letter_bucket: str, kinesis: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN a first PutRecords call in which entries 1, 5, 17 and 30 are throttled
    envelopes = readings(40)
    failing = {1, 5, 17, 30}
    fault_proxy.fail_entries(lambda position, _: position in failing)

    # WHEN 40 readings are published one record each
    report = publisher(
        stream, S3DeadLetterSink(dead_letter_bucket, PREFIX), aggregation=False
    ).publish(envelopes)

    # THEN the second call carries exactly those four entries, in their original order
    first, second = fault_proxy.calls
    assert first.failed_positions == sorted(failing)
    assert second.data == [encode(envelopes[i]) for i in sorted(failing)]
    # AND everything arrived exactly once
    assert report.attempts == 2 and report.sent == 40
    assert read_stream(kinesis, stream).event_ids == {e.event_id: 1 for e in envelopes}


def test_whole_call_throttling_is_retried_with_backoff(
    stream: str, dead_letter_bucket: str, kinesis: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN two calls answered with Kinesis' ProvisionedThroughputExceededException error body
    fault_proxy.throttle(times=2)
    envelopes = readings(300)

    # WHEN readings are published
    report = publisher(stream, S3DeadLetterSink(dead_letter_bucket, PREFIX)).publish(envelopes)

    # THEN the third attempt delivered them all, once
    assert [call.fault for call in fault_proxy.calls] == ["throttle", "throttle", None]
    assert report.attempts == 3 and report.sent == 300 and report.failed_to_dead_letter == 0
    assert read_stream(kinesis, stream).event_ids == {e.event_id: 1 for e in envelopes}


def test_read_timeout_resends_and_duplicates_carry_identical_ids_and_bytes(
    stream: str, dead_letter_bucket: str, kinesis: Any, s3: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN a call that reaches the stream but whose answer comes after the client's read timeout
    fault_proxy.delay(1.0)
    envelopes = readings(100)

    # WHEN readings are published with a 0.3 s read timeout
    report = publisher(
        stream, S3DeadLetterSink(dead_letter_bucket, PREFIX), read_timeout=0.3
    ).publish(envelopes)

    # THEN the batch was sent again: every id arrived twice, as the same bytes, none lost
    contents = read_stream(kinesis, stream)
    assert report.attempts == 2 and report.failed_to_dead_letter == 0
    assert contents.event_ids == {e.event_id: 2 for e in envelopes}
    assert_nothing_lost(envelopes, contents, s3_dead_letters(s3, dead_letter_bucket))


def test_persistent_failure_writes_exact_envelopes_as_delivery_failed_dead_letters_to_s3(
    stream: str, dead_letter_bucket: str, kinesis: Any, s3: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN a stream answering every call with HTTP 500 InternalFailure
    fault_proxy.server_error(times=None)
    envelopes = readings(50)

    # WHEN readings are published with a 1 s retry budget
    started = time.monotonic()
    report = publisher(stream, S3DeadLetterSink(dead_letter_bucket, PREFIX)).publish(envelopes)
    elapsed = time.monotonic() - started

    # THEN after a bounded time every envelope is in S3 as a delivery_failed dead letter, byte for byte
    letters = s3_dead_letters(s3, dead_letter_bucket)
    assert elapsed < 3.0
    assert report.sent == 0 and report.failed_to_dead_letter == 50 and 2 <= report.attempts <= 6
    assert {letter.error_type for letter in letters} == {ErrorType.DELIVERY_FAILED}
    assert sorted(letter.raw.encode() for letter in letters) == sorted(encode(e) for e in envelopes)
    assert all("gave up after" in letter.message for letter in letters)
    assert read_stream(kinesis, stream).envelopes == []


def test_persistent_failure_can_dead_letter_to_sqs(
    stream: str, dead_letter_queue: str, sqs: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN a throttled stream and an SQS dead-letter queue
    fault_proxy.throttle(times=None)
    envelopes = readings(25)

    # WHEN readings are published
    sink = SqsDeadLetterSink(dead_letter_queue, max_message_bytes=256 * 1024)
    report = publisher(stream, sink).publish(envelopes)

    # THEN each envelope is one SQS message holding its delivery_failed dead letter
    letters = sqs_dead_letters(sqs, dead_letter_queue)
    assert report.failed_to_dead_letter == 25
    assert sorted(letter.raw.encode() for letter in letters) == sorted(encode(e) for e in envelopes)
    assert {letter.error_type for letter in letters} == {ErrorType.DELIVERY_FAILED}


def test_entries_that_keep_failing_are_dead_lettered_while_the_others_arrive(
    stream: str, dead_letter_bucket: str, kinesis: Any, s3: Any, fault_proxy: FaultProxy
) -> None:
    # GIVEN a stream that throttles every entry whose partition key ends in 3 or 7, every time
    fault_proxy.fail_entries(lambda _, entry: entry["PartitionKey"][-1] in "37", times=None)
    envelopes = readings(200)

    # WHEN readings are published one record each
    report = publisher(
        stream, S3DeadLetterSink(dead_letter_bucket, PREFIX), aggregation=False
    ).publish(envelopes)

    # THEN the others arrived once, those went to S3, and together they are all of them
    contents = read_stream(kinesis, stream)
    letters = s3_dead_letters(s3, dead_letter_bucket)
    unlucky = [e for e in envelopes if e.partition_key[-1] in "37"]
    assert report.failed_to_dead_letter == len(letters) == len(unlucky) == 40
    assert report.sent == len(contents.envelopes) == 160
    assert_nothing_lost(envelopes, contents, letters)


def test_when_the_dead_letter_destination_fails_too_publish_raises(
    stream: str, fault_proxy: FaultProxy
) -> None:
    # GIVEN a failing stream and a dead-letter bucket that does not exist
    fault_proxy.server_error(times=None)
    sink = S3DeadLetterSink("no-such-bucket-for-sluice", PREFIX)

    # WHEN / THEN publishing raises, so the invocation fails and is retried
    with pytest.raises(DeadLetterDeliveryError, match="no-such-bucket-for-sluice"):
        publisher(stream, sink).publish(readings(5))


def test_a_missing_stream_is_not_retried(aws_env: str, dead_letter_bucket: str, s3: Any) -> None:
    # GIVEN a stream name that does not exist
    envelopes = readings(10)

    # WHEN readings are published to it
    report = publisher("no-such-stream", S3DeadLetterSink(dead_letter_bucket, PREFIX)).publish(
        envelopes
    )

    # THEN one attempt was made and everything went to the dead letters, saying why
    letters = s3_dead_letters(s3, dead_letter_bucket)
    assert report.attempts == 1 and report.failed_to_dead_letter == 10
    assert all("not retryable: ResourceNotFoundException" in letter.message for letter in letters)


@pytest.mark.parametrize("aggregation", [True, False])
def test_an_envelope_over_one_mib_is_never_sent_its_dead_letter_is(
    aws_env: str, stream: str, dead_letter_bucket: str, kinesis: Any, aggregation: bool
) -> None:
    # GIVEN a reading whose envelope is larger than a Kinesis record, among normal ones
    huge = readings(1, padding=1_100_000)[0].model_copy(update={"event_id": "huge"})
    envelopes = [*readings(10), huge]

    # WHEN they are published
    report = publisher(
        stream, S3DeadLetterSink(dead_letter_bucket, PREFIX), aggregation=aggregation
    ).publish(envelopes)

    # THEN the normal ones arrived and the big one travels as a too_large dead letter
    contents = read_stream(kinesis, stream)
    (letter,) = contents.dead_letters()
    assert report.too_large == 1 and report.sent == 11
    assert letter.error_type is ErrorType.TOO_LARGE and letter.raw_truncated
    assert letter.raw_size == len(encode(huge)) and "huge" in letter.message
    assert {e.event_id for e in contents.records()} == {e.event_id for e in envelopes[:10]}
    assert orjson.loads(contents.user_records[0].data)["kind"] == "record"
