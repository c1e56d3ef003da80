"""Delivery planning: PutRecords batches within limits, retry decisions, backoff, dead letters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import DeadLetter, Envelope, ErrorType, IotReading, Source
from sluice.core.deadletters import MAX_RAW_BYTES
from sluice.core.retry import BackoffPolicy
from sluice.edges.delivery import (
    MAX_BYTES_PER_REQUEST,
    KinesisEntry,
    OutgoingEnvelope,
    PutLimits,
    classify_results,
    dead_letter_object_key,
    delivery_failed_letters,
    is_retryable_call_error,
    plan_batches,
    plan_delivery,
    sqs_message_batches,
)
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.kpl import deaggregate

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)


def reading(i: int, padding: int = 0, device: str | None = None) -> Envelope:
    return wrap_reading(
        IotReading(
            device_id=device or f"device-{i % 5}",
            event_time=T0 + timedelta(seconds=i),
            metrics={"t": float(i)},
            attributes={"pad": "x" * padding} if padding else {},
        ),
        T0,
    )


def entry(size: int, key: str = "k") -> KinesisEntry:
    return KinesisEntry(key, b"x" * size, ())


# Planning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "limits", "expected"),
    [
        ([10] * 7, PutLimits(max_records=3), [[10] * 3, [10] * 3, [10]]),
        ([3000, 3000, 3000], PutLimits(max_record_bytes=4000, max_request_bytes=7000),
         [[3000, 3000], [3000]]),
        ([3999, 1, 2999], PutLimits(max_record_bytes=4000, max_request_bytes=4001),
         [[3999, 1], [2999]]),
        ([], PutLimits(), []),
    ],
    ids=["record-count", "request-bytes", "exactly-full", "nothing"],
)  # fmt: skip
def test_batches_respect_count_and_byte_limits_in_order(
    sizes: list[int], limits: PutLimits, expected: list[list[int]]
) -> None:
    # The partition key "k" counts one byte towards each entry.
    batches = list(plan_batches([entry(size - 1) for size in sizes], limits))
    assert [[e.size for e in batch] for batch in batches] == expected


def test_partition_key_bytes_count_towards_the_limits() -> None:
    # GIVEN entries of 1,000 data bytes under a 3-character key of 4 bytes each (12 bytes)
    entries = [entry(1000, key="\U0001f600" * 3) for _ in range(4)]
    # WHEN planned with 3,036 bytes per request THEN three fit (3,036) and the fourth does not
    limits = PutLimits(max_record_bytes=2048, max_request_bytes=3036)
    assert [len(b) for b in plan_batches(entries, limits)] == [3, 1]


def test_an_entry_over_the_record_limit_is_refused_by_the_low_level_planner() -> None:
    with pytest.raises(ValueError, match="bytes >"):
        list(plan_batches([entry(5000)], PutLimits(max_record_bytes=4096)))


@pytest.mark.parametrize(
    "kwargs",
    [{"max_records": 501}, {"max_records": 0}, {"max_request_bytes": MAX_BYTES_PER_REQUEST + 1},
     {"max_record_bytes": 100}, {"max_record_bytes": 9000, "max_request_bytes": 8000}],
)  # fmt: skip
def test_limits_beyond_what_kinesis_allows_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PutLimits(**kwargs)


SMALL_LIMITS = PutLimits(max_records=4, max_record_bytes=100_000, max_request_bytes=250_000)


@given(
    paddings=st.lists(st.sampled_from([0, 10, 500, 20_000, 60_000, 150_000, 200_000]), max_size=25),
    aggregated=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_a_plan_holds_every_envelope_once_within_limits_and_dead_letters_the_too_large(
    paddings: list[int], aggregated: bool
) -> None:
    # GIVEN envelopes of many sizes, some over the (lowered) record limit
    envelopes = [reading(i, padding) for i, padding in enumerate(paddings)]

    # WHEN a delivery is planned
    plan = plan_delivery(envelopes, aggregated=aggregated, limits=SMALL_LIMITS, now=T0)

    # THEN every call and every record is within the limits
    for batch in plan.batches:
        assert 1 <= len(batch) <= SMALL_LIMITS.max_records
        assert sum(e.size for e in batch) <= SMALL_LIMITS.max_request_bytes
        assert all(e.size <= SMALL_LIMITS.max_record_bytes for e in batch)
    # AND the envelopes that fit are carried once, in order, followed by the too-large dead letters
    carried = [o for batch in plan.batches for e in batch for o in e.envelopes]
    fitting = [e for e in envelopes if len(encode(e)) < 90_000]  # sizes far from the limit
    assert [o.data for o in carried[: len(fitting)]] == [encode(e) for e in fitting]
    assert len(plan.too_large) == len(envelopes) - len(fitting) == len(carried) - len(fitting)
    assert all(letter.error_type is ErrorType.TOO_LARGE for letter in plan.too_large)
    assert [o.event_id for o in carried[len(fitting) :]] == [
        letter.dead_letter_id for letter in plan.too_large
    ]
    # AND what travels in each Kinesis record is exactly what it says it carries
    for batch in plan.batches:
        for kinesis_entry in batch:
            restored = [
                r.data for r in deaggregate(kinesis_entry.data, kinesis_entry.partition_key)
            ]
            assert restored == [o.data for o in kinesis_entry.envelopes]


def test_aggregating_packs_many_envelopes_into_few_records() -> None:
    envelopes = [reading(i) for i in range(3000)]
    aggregated = plan_delivery(envelopes, aggregated=True)
    plain = plan_delivery(envelopes, aggregated=False)
    assert [len(b) for b in aggregated.batches] == [1]
    assert [len(b) for b in plain.batches] == [500] * 6
    assert aggregated.envelope_count == plain.envelope_count == 3000


# Retry decisions --------------------------------------------------------------------------------

OK = {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}
THROTTLED = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
INTERNAL = {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."}
KMS = {"ErrorCode": "KMSAccessDeniedException", "ErrorMessage": "denied"}


@pytest.mark.parametrize(
    ("results", "retry", "rejected", "delivered"),
    [
        ([OK, OK, OK, OK], [], [], ["a", "b", "c", "d"]),
        ([OK, THROTTLED, OK, INTERNAL], ["b", "d"], [], ["a", "c"]),
        ([INTERNAL, THROTTLED, THROTTLED, INTERNAL], ["a", "b", "c", "d"], [], []),
        ([OK, KMS, THROTTLED, OK], ["c"], ["b"], ["a", "d"]),
        ([OK, OK], ["a", "b", "c", "d"], [], []),  # a response that does not match the request
    ],
    ids=["all-ok", "some-failed", "all-failed", "not-retryable", "malformed"],
)
def test_only_failed_entries_are_retried_in_their_original_order(
    results: list[dict[str, str]], retry: list[str], rejected: list[str], delivered: list[str]
) -> None:
    batch = ["a", "b", "c", "d"]
    outcome = classify_results(batch, results)
    assert [f.entry for f in outcome.retry] == retry
    assert [f.entry for f in outcome.rejected] == rejected
    assert outcome.delivered == delivered


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("ProvisionedThroughputExceededException", 400, True),
        ("LimitExceededException", 400, True),
        ("KMSThrottlingException", 400, True),
        ("InternalFailure", 500, True),
        (None, 503, True),
        ("ResourceNotFoundException", 400, False),
        ("AccessDeniedException", 400, False),
        ("ValidationException", 400, False),
        ("KMSDisabledException", 400, False),
    ],
)
def test_whole_call_errors_are_retried_only_when_transient(
    code: str | None, status: int, retryable: bool
) -> None:
    assert is_retryable_call_error(code, status) is retryable


# Backoff ----------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = BackoffPolicy(base_seconds=0.1, cap_seconds=1.0)
    rng = random.Random(1)
    for retry in range(12):
        ceiling = min(1.0, 0.1 * 2**retry)
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # jitter spans the whole range, not just its top
        assert min(delays) < 0.2 * ceiling


def test_backoff_is_deterministic_with_a_seeded_random() -> None:
    policy = BackoffPolicy()
    first = [policy.backoff(n, random.Random(42)) for n in range(8)]
    again = [policy.backoff(n, random.Random(42)) for n in range(8)]
    assert first == again
    assert first != [policy.backoff(n, random.Random(43)) for n in range(8)]


def test_retries_stop_at_the_attempt_limit_and_at_the_time_budget() -> None:
    policy = BackoffPolicy(base_seconds=1, cap_seconds=1, max_attempts=3, max_elapsed_seconds=10)
    rng = random.Random(0)
    assert policy.next_delay(1, 0.0, rng) is not None
    assert policy.next_delay(2, 0.0, rng) is not None
    assert policy.next_delay(3, 0.0, rng) is None  # three attempts made
    assert policy.next_delay(1, 10.0, rng) is None  # budget spent
    # The last delay is cut to the time left, so the final attempt still happens in budget.
    assert all(policy.next_delay(1, 9.99, rng) <= 0.01 + 1e-9 for _ in range(50))  # type: ignore[operator]


def test_a_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(base_seconds=2, cap_seconds=1)
    with pytest.raises(ValueError):
        BackoffPolicy(max_attempts=0)


# Dead letters of undelivered envelopes ----------------------------------------------------------


def test_delivery_failed_letters_keep_the_exact_envelope_even_beyond_64_kib() -> None:
    # GIVEN a 200 KiB envelope and a small one
    envelopes = [OutgoingEnvelope.of(reading(1, padding=200_000)), OutgoingEnvelope.of(reading(2))]
    assert len(envelopes[0].data) > MAX_RAW_BYTES

    # WHEN they become delivery_failed dead letters (twice: a retried invocation)
    letters = delivery_failed_letters(envelopes, "gave up after 8 attempts", now=T0)
    again = delivery_failed_letters(envelopes, "gave up after 8 attempts", now=T0)

    # THEN raw is each envelope's bytes, whole, and the ids are the same both times
    assert [letter.raw.encode() for letter in letters] == [e.data for e in envelopes]
    assert not any(letter.raw_truncated for letter in letters)
    assert all(letter.error_type is ErrorType.DELIVERY_FAILED for letter in letters)
    assert [letter.dead_letter_id for letter in letters] == [a.dead_letter_id for a in again]
    assert letters[0].dead_letter_id != letters[1].dead_letter_id


def test_the_s3_key_is_the_same_for_the_same_dead_letters_on_the_same_day() -> None:
    letters = delivery_failed_letters(
        [OutgoingEnvelope.of(reading(i)) for i in range(3)], "x", now=T0
    )
    key = dead_letter_object_key("dl/", letters, T0)
    assert key.startswith("dl/delivery_failed/dt=2026-11-26/") and key.endswith(".ndjson")
    assert dead_letter_object_key("dl/", letters[::-1], T0 + timedelta(hours=1)) == key
    assert dead_letter_object_key("dl/", letters[:2], T0) != key


def letter_of(size: int, i: int = 0) -> DeadLetter:
    envelope = OutgoingEnvelope(f"e{i}", Source.IOT, "k", ('"quoted" ' * (size // 9)).encode())
    (letter,) = delivery_failed_letters([envelope], "x", now=T0)
    return letter


def test_sqs_batches_hold_at_most_ten_messages_and_the_byte_limit_with_unique_ids() -> None:
    letters = [letter_of(1000, i) for i in range(25)] + [letter_of(1000, 0)] * 3  # repeats
    batches = list(sqs_message_batches(letters, max_message_bytes=4096, max_batch_bytes=8000))
    assert sum(len(b) for b in batches) == 28
    for batch in batches:
        assert len(batch) <= 10
        assert sum(len(body.encode()) for _, body in batch) <= 8000
        assert len({entry_id for entry_id, _ in batch}) == len(batch)


def test_a_dead_letter_too_big_for_a_queue_message_is_cut_and_marked() -> None:
    big = letter_of(300_000)
    (batch,) = sqs_message_batches([big], max_message_bytes=65_536, max_batch_bytes=65_536)
    ((_, body),) = batch
    sent = DeadLetter.model_validate_json(body)
    assert len(body.encode()) <= 65_536
    assert sent.raw_truncated and big.raw.startswith(sent.raw) and len(sent.raw) > 50_000
    assert sent.dead_letter_id == big.dead_letter_id
