"""Delivery planning for Kinesis PutRecords: what goes in which call, what to retry, when to give up.

In: envelopes to publish; PutRecords per-entry results; error codes of failed calls; attempt counts.
Out: a ``DeliveryPlan`` (PutRecords batches within the limits, optionally KPL-aggregated), retry
decisions (only failed entries, in their original order; the delays are ``sluice.core.retry``'s), and
the dead letters of envelopes that cannot or could not be delivered.

Dead letters:
- ``too_large``: an envelope that cannot fit in one Kinesis record (1 MiB of data plus partition
  key). It is never sent; its dead letter travels the stream instead, as a dead-letter envelope, so
  the one dead-letter sink collects it.
- ``delivery_failed``: envelopes still undelivered when the retry budget is spent, or refused with a
  non-retryable error. ``raw`` holds the exact envelope bytes (never truncated) so they can be
  re-driven; the publisher writes them to S3 or SQS, because the stream is what failed.

No I/O happens here: ``edge_lambdas/shared/publisher.py`` makes the calls and sleeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sluice.core.aws_errors import THROTTLING_CODES, TRANSIENT_CODES, retry_class
from sluice.core.contracts import DeadLetter, Envelope, ErrorType, Source, Stage, make_event_id
from sluice.core.deadletters import dead_letter
from sluice.stream.envelopes import encode, with_correlation_id, wrap_dead_letter
from sluice.stream.kpl import (
    MAX_KINESIS_RECORD_BYTES,
    MAX_PARTITION_KEY_BYTES,
    UserRecord,
    aggregate,
    aggregated_size,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_BYTES_PER_REQUEST",
    "MAX_RECORDS_PER_REQUEST",
    "KinesisEntry",
    "OutgoingEnvelope",
    "PublishReport",
    "PutLimits",
    "classify_results",
    "dead_letter_object_key",
    "dead_letters_ndjson",
    "delivery_failed_letters",
    "is_retryable_call_error",
    "plan_batches",
    "plan_delivery",
    "sqs_message_batches",
    "with_dead_letters",
]

MAX_RECORDS_PER_REQUEST = 500
MAX_BYTES_PER_REQUEST = 5 * 1024 * 1024
"""PutRecords limit for one call: data plus partition key bytes of every entry."""
STAGE = Stage.EDGE_PUBLISH
_MIN_RECORD_BYTES = 2 * MAX_PARTITION_KEY_BYTES

RETRYABLE_ENTRY_ERRORS = frozenset({"ProvisionedThroughputExceededException", "InternalFailure"})
"""The per-entry error codes PutRecords documents; both are transient."""
RETRYABLE_CALL_ERRORS = THROTTLING_CODES | TRANSIENT_CODES
"""Whole-call error codes worth retrying: throttling and server-side failures. Anything else
(a missing stream, access denied, a KMS key disabled) will not heal within a retry budget."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PutLimits:
    """The PutRecords limits a plan respects (lower them to test, never raise them)."""

    max_records: int = MAX_RECORDS_PER_REQUEST
    max_request_bytes: int = MAX_BYTES_PER_REQUEST
    max_record_bytes: int = MAX_KINESIS_RECORD_BYTES

    @property
    def aggregate_bytes(self) -> int:
        """Data bytes of one aggregate, leaving room for any partition key within the record limit."""
        return self.max_record_bytes - MAX_PARTITION_KEY_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= MAX_RECORDS_PER_REQUEST:
            raise ValueError(f"max_records must be in 1..{MAX_RECORDS_PER_REQUEST}")
        if not _MIN_RECORD_BYTES <= self.max_record_bytes <= MAX_KINESIS_RECORD_BYTES:
            raise ValueError(
                f"max_record_bytes must be in {_MIN_RECORD_BYTES}..{MAX_KINESIS_RECORD_BYTES}"
            )
        if not self.max_record_bytes <= self.max_request_bytes <= MAX_BYTES_PER_REQUEST:
            raise ValueError(
                f"max_request_bytes must be in max_record_bytes..{MAX_BYTES_PER_REQUEST}"
            )


DEFAULT_LIMITS = PutLimits()


@dataclass(frozen=True, slots=True)
class OutgoingEnvelope:
    """One envelope on its way to the stream: its wire bytes and what a dead letter needs."""

    event_id: str
    source: Source
    partition_key: str
    data: bytes
    correlation_id: str | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> OutgoingEnvelope:
        return cls(envelope.event_id, envelope.source, envelope.partition_key, encode(envelope),
                   envelope.correlation_id)  # fmt: skip


@dataclass(frozen=True, slots=True)
class KinesisEntry:
    """One PutRecords entry: a Kinesis record and the envelopes it carries (one, or an aggregate)."""

    partition_key: str
    data: bytes
    envelopes: tuple[OutgoingEnvelope, ...]

    @property
    def size(self) -> int:
        """Bytes Kinesis counts against its limits: data plus UTF-8 partition key."""
        return len(self.data) + len(self.partition_key.encode())

    def request_entry(self) -> dict[str, Any]:
        return {"Data": self.data, "PartitionKey": self.partition_key}


@dataclass(slots=True)
class DeliveryPlan:
    """PutRecords batches in order, and the ``too_large`` dead letters (already in the batches as
    dead-letter envelopes, listed here to be counted)."""

    batches: list[list[KinesisEntry]]
    too_large: list[DeadLetter] = field(default_factory=list)

    @property
    def envelope_count(self) -> int:
        return sum(len(entry.envelopes) for batch in self.batches for entry in batch)


def _fits(envelope: OutgoingEnvelope, *, aggregated: bool, limits: PutLimits) -> bool:
    if aggregated:
        return aggregated_size(envelope.partition_key, envelope.data) <= limits.aggregate_bytes
    return len(envelope.data) + len(envelope.partition_key.encode()) <= limits.max_record_bytes


def pack(
    envelopes: Sequence[OutgoingEnvelope], *, aggregated: bool, max_bytes: int
) -> list[KinesisEntry]:
    """Kinesis entries for ``envelopes`` in order: KPL aggregates, or one entry per envelope."""
    if not aggregated:
        return [KinesisEntry(e.partition_key, e.data, (e,)) for e in envelopes]
    entries: list[KinesisEntry] = []
    start = 0
    user_records = (UserRecord(e.partition_key, e.data) for e in envelopes)
    for record in aggregate(user_records, max_bytes):
        carried = tuple(envelopes[start : start + record.user_record_count])
        start += record.user_record_count
        entries.append(KinesisEntry(record.partition_key, record.data, carried))
    return entries


def plan_batches(
    entries: Iterable[KinesisEntry], limits: PutLimits = DEFAULT_LIMITS
) -> Iterator[list[KinesisEntry]]:
    """Group entries, in order, into PutRecords calls within the record-count and byte limits.

    Raises ``ValueError`` for an entry over the per-record limit: ``plan_delivery`` never makes one.
    """
    batch: list[KinesisEntry] = []
    batch_bytes = 0
    for entry in entries:
        size = entry.size
        if size > limits.max_record_bytes:
            raise ValueError(f"entry of {size} bytes > {limits.max_record_bytes}")
        if batch and (
            len(batch) >= limits.max_records or batch_bytes + size > limits.max_request_bytes
        ):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(entry)
        batch_bytes += size
    if batch:
        yield batch


def plan_delivery(
    envelopes: Iterable[Envelope],
    *,
    aggregated: bool,
    limits: PutLimits = DEFAULT_LIMITS,
    stage: Stage = STAGE,
    now: datetime | None = None,
    correlation_id: str | None = None,
) -> DeliveryPlan:
    """Everything to send, batched: too-large envelopes become dead-letter envelopes (sent instead).

    ``correlation_id`` (checked, ``sluice.core.contracts.correlation_id``): the edge request's id,
    given to every envelope and dead letter that has none."""
    admitted: list[OutgoingEnvelope] = []
    too_large: list[DeadLetter] = []
    for envelope in with_correlation_id(envelopes, correlation_id):
        outgoing = OutgoingEnvelope.of(envelope)
        if _fits(outgoing, aggregated=aggregated, limits=limits):
            admitted.append(outgoing)
            continue
        size = len(outgoing.data) + len(outgoing.partition_key.encode())
        too_large.append(
            dead_letter(
                outgoing.source,
                stage,
                ErrorType.TOO_LARGE,
                f"envelope {outgoing.event_id} of {size} bytes does not fit in one Kinesis record",
                outgoing.data,
                first_seen=now,
                correlation_id=envelope.correlation_id,
            )
        )
    # A dead letter keeps at most 64 KiB of raw input, so its envelope always fits.
    admitted.extend(
        OutgoingEnvelope.of(envelope)
        for envelope in with_correlation_id(
            (wrap_dead_letter(letter, now) for letter in too_large), correlation_id
        )
    )
    entries = pack(admitted, aggregated=aggregated, max_bytes=limits.aggregate_bytes)
    return DeliveryPlan(list(plan_batches(entries, limits)), too_large)


@dataclass(frozen=True, slots=True)
class EntryFailure(Generic[T]):
    entry: T
    code: str
    message: str


@dataclass(slots=True)
class PutOutcome(Generic[T]):
    """How one PutRecords response settles each entry of its request."""

    delivered: list[T] = field(default_factory=list)
    retry: list[EntryFailure[T]] = field(default_factory=list)
    rejected: list[EntryFailure[T]] = field(default_factory=list)


def classify_results(batch: Sequence[T], results: Sequence[Mapping[str, Any]]) -> PutOutcome[T]:
    """Split a batch by its per-entry results (same order as the request), keeping batch order.

    A response whose result count differs from the batch says nothing reliable about any entry:
    every entry is retried (a duplicate is de-duplicable by event id; a loss is not recoverable).
    """
    outcome: PutOutcome[T] = PutOutcome()
    if len(results) != len(batch):
        message = f"{len(results)} results for {len(batch)} entries"
        outcome.retry = [EntryFailure(entry, "MalformedResponse", message) for entry in batch]
        return outcome
    for entry, result in zip(batch, results, strict=True):
        code = result.get("ErrorCode")
        if not code:
            outcome.delivered.append(entry)
            continue
        failure = EntryFailure(entry, str(code), str(result.get("ErrorMessage") or ""))
        (outcome.retry if code in RETRYABLE_ENTRY_ERRORS else outcome.rejected).append(failure)
    return outcome


def is_retryable_call_error(code: str | None, http_status: int | None) -> bool:
    """Whether a failed PutRecords call (not an entry) is worth repeating."""
    return retry_class(code, http_status) is not None


def delivery_failed_letters(
    envelopes: Iterable[OutgoingEnvelope],
    reason: str,
    *,
    stage: Stage = STAGE,
    now: datetime | None = None,
) -> list[DeadLetter]:
    """``delivery_failed`` dead letters whose ``raw`` is each envelope's exact wire bytes.

    ``dead_letter`` keeps 64 KiB of raw input; an envelope can be up to 1 MiB, and re-driving it
    needs all of it, so the whole envelope is put back (its id still depends only on the input).
    """
    letters = []
    for envelope in envelopes:
        letter = dead_letter(
            envelope.source,
            stage,
            ErrorType.DELIVERY_FAILED,
            f"event {envelope.event_id}: {reason}",
            envelope.data,
            first_seen=now,
            correlation_id=envelope.correlation_id,
        )
        if letter.raw_truncated:
            letter = letter.model_copy(
                update={"raw": envelope.data.decode(), "raw_truncated": False}
            )
        letters.append(letter)
    return letters


def dead_letters_ndjson(letters: Iterable[DeadLetter]) -> bytes:
    """One dead letter per line, as the dead-letter table's loader reads them."""
    return b"".join(letter.model_dump_json().encode() + b"\n" for letter in letters)


def dead_letter_object_key(prefix: str, letters: Sequence[DeadLetter], now: datetime) -> str:
    """An S3 key that is the same for the same dead letters on the same day.

    A re-run invocation that gives up on the same envelopes overwrites its earlier object instead of
    adding a copy; the date partition lets the loader pick up new objects cheaply.
    """
    digest = make_event_id("delivery_failed", *sorted(letter.dead_letter_id for letter in letters))
    day = now.astimezone(UTC).strftime("%Y-%m-%d")
    return f"{prefix}{ErrorType.DELIVERY_FAILED.value}/dt={day}/{digest}.ndjson"


def sqs_message_batches(
    letters: Iterable[DeadLetter], *, max_message_bytes: int, max_batch_bytes: int
) -> Iterator[list[tuple[str, str]]]:
    """SendMessageBatch groups of (entry id, message body): at most 10 messages and
    ``max_batch_bytes`` per call, one dead letter per message.

    Entry ids are positions, not dead-letter ids: the same envelope dead-lettered twice in one
    publish would otherwise repeat an id, which SQS refuses for the whole batch. A dead letter too big
    for one message keeps a shortened ``raw`` marked ``raw_truncated`` (the S3 destination never
    needs to cut, which is why it is the default).
    """
    batch: list[tuple[str, str]] = []
    batch_bytes = 0
    for letter in letters:
        body = _fit_message(letter, max_message_bytes)
        size = len(body.encode())
        if batch and (len(batch) >= 10 or batch_bytes + size > max_batch_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append((f"m{len(batch)}", body))
        batch_bytes += size
    if batch:
        yield batch


def _fit_message(letter: DeadLetter, max_message_bytes: int) -> str:
    body = letter.model_dump_json()
    if len(body.encode()) <= max_message_bytes:
        return body
    # JSON escaping makes the cost of a character vary, so search for the longest raw that fits.
    low, high, best = 0, len(letter.raw), ""
    while low <= high:
        keep = (low + high) // 2
        cut = letter.model_copy(update={"raw": letter.raw[:keep], "raw_truncated": True})
        candidate = cut.model_dump_json()
        if len(candidate.encode()) <= max_message_bytes:
            low, best = keep + 1, candidate
        else:
            high = keep - 1
    return best


@dataclass(slots=True)
class PublishReport:
    """What one publish did, in envelopes (user records) and PutRecords calls."""

    sent: int = 0
    """Envelopes now on the stream (dead-letter envelopes included)."""
    failed_to_dead_letter: int = 0
    """Envelopes written to the delivery dead-letter destination instead."""
    attempts: int = 0
    """PutRecords calls made, retries included."""
    kinesis_records: int = 0
    """Kinesis records accepted by the stream (fewer than ``sent`` when aggregating)."""
    too_large: int = 0
    """Envelopes replaced by a ``too_large`` dead letter."""

    def add(self, other: PublishReport) -> None:
        self.sent += other.sent
        self.failed_to_dead_letter += other.failed_to_dead_letter
        self.attempts += other.attempts
        self.kinesis_records += other.kinesis_records
        self.too_large += other.too_large

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed_to_dead_letter": self.failed_to_dead_letter,
            "attempts": self.attempts,
            "kinesis_records": self.kinesis_records,
            "too_large": self.too_large,
        }


def with_dead_letters(
    envelopes: Iterable[Envelope],
    letters: Iterable[DeadLetter],
    ingest_time: datetime | None = None,
) -> list[Envelope]:
    """What an edge publishes for a batch: its envelopes, then its dead letters as envelopes."""
    return [*envelopes, *(wrap_dead_letter(letter, ingest_time) for letter in letters)]
