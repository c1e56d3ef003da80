"""The edges' Kinesis publisher: envelopes in, a ``PublishReport`` out, nothing dropped.

In: ``Envelope`` values (records and edge dead letters alike).
Out: every envelope is either on the stream (PutRecords, KPL-aggregated when enabled) or, after the
retry budget is spent or on an error no retry can fix, in the dead-letter destination as a
``delivery_failed`` DeadLetter whose ``raw`` is the exact envelope: an NDJSON object under an S3
prefix, or SQS messages. ``too_large`` envelopes (over 1 MiB) are never sent; their dead letters are.
If the dead-letter destination fails too, ``DeadLetterDeliveryError`` is raised so the invocation
fails and is retried; event ids are deterministic, so whatever reached the stream twice is
de-duplicable downstream.

The decisions (batching, aggregation, which entries to retry, backoff, dead letters) are
``sluice.edges.delivery``'s pure functions; this module only makes the calls and sleeps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3
from aws_lambda_powertools import Logger, Tracer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from edge_lambdas.shared.settings import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_READ_TIMEOUT_SECONDS,
    EdgeSettings,
    load_settings,
)
from sluice.core.aws_errors import AwsError, aws_error
from sluice.core.contracts import DeadLetter, Envelope
from sluice.core.errors import SluiceError
from sluice.core.retry import BackoffPolicy
from sluice.edges.delivery import (
    DEFAULT_LIMITS,
    KinesisEntry,
    OutgoingEnvelope,
    PublishReport,
    PutLimits,
    classify_results,
    dead_letter_object_key,
    dead_letters_ndjson,
    delivery_failed_letters,
    is_retryable_call_error,
    plan_delivery,
    sqs_message_batches,
)

__all__ = ["DeadLetterDeliveryError", "KinesisPublisher", "S3DeadLetterSink", "SqsDeadLetterSink"]

tracer = Tracer()
_SQS_MAX_BATCH_BYTES = 1024 * 1024


class DeadLetterDeliveryError(SluiceError):
    """Neither the stream nor the dead-letter destination took some envelopes: fail the invocation."""


class DeadLetterSink(Protocol):
    """Where envelopes go when the stream will not take them. ``write`` raises
    ``DeadLetterDeliveryError`` unless every dead letter is stored."""

    def write(self, letters: Sequence[DeadLetter]) -> None: ...


def _aws_config(connect_timeout: float, read_timeout: float, attempts: int) -> Config:
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
        tcp_keepalive=True,
    )


class S3DeadLetterSink:
    """One NDJSON object per write under ``prefix``; the key depends only on the dead letters and the
    day, so a retried invocation overwrites its own object instead of duplicating it."""

    def __init__(self, bucket: str, prefix: str, client: Any | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix
        # The SDK's own retries are fine here: this is the last resort, not the hot path.
        self.client = client or boto3.client("s3", config=_aws_config(2, 10, 3))

    def write(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        key = dead_letter_object_key(self.prefix, letters, datetime.now(UTC))
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=dead_letters_ndjson(letters),
                ContentType="application/x-ndjson",
            )
        except (BotoCoreError, ClientError) as err:
            raise DeadLetterDeliveryError(f"s3://{self.bucket}/{key}: {err}") from err


class SqsDeadLetterSink:
    """One dead letter per SQS message, sent ten at a time."""

    def __init__(self, queue_url: str, max_message_bytes: int, client: Any | None = None) -> None:
        self.queue_url, self.max_message_bytes = queue_url, max_message_bytes
        self.client = client or boto3.client("sqs", config=_aws_config(2, 10, 3))

    def write(self, letters: Sequence[DeadLetter]) -> None:
        batches = sqs_message_batches(
            letters,
            max_message_bytes=self.max_message_bytes,
            max_batch_bytes=max(self.max_message_bytes, _SQS_MAX_BATCH_BYTES),
        )
        for batch in batches:
            entries = [{"Id": entry_id, "MessageBody": body} for entry_id, body in batch]
            try:
                response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as err:
                raise DeadLetterDeliveryError(f"{self.queue_url}: {err}") from err
            if response.get("Failed"):
                raise DeadLetterDeliveryError(f"{self.queue_url}: {response['Failed'][:3]}")


def dead_letter_sink_from_settings(settings: EdgeSettings) -> DeadLetterSink:
    if settings.dead_letter_bucket is not None:
        return S3DeadLetterSink(settings.dead_letter_bucket, settings.dead_letter_prefix)
    assert settings.dead_letter_queue_url is not None  # the settings validator guarantees one
    return SqsDeadLetterSink(
        settings.dead_letter_queue_url, settings.dead_letter_queue_max_message_bytes
    )


@dataclass(slots=True)
class _BatchResult:
    delivered: list[KinesisEntry] = field(default_factory=list)
    undelivered: list[tuple[KinesisEntry, str]] = field(default_factory=list)
    attempts: int = 0


class KinesisPublisher:
    """Publishes envelopes to one stream with bounded retries and a dead-letter destination."""

    def __init__(
        self,
        stream_name: str,
        dead_letters: DeadLetterSink | None = None,
        *,
        aggregation: bool = True,
        limits: PutLimits = DEFAULT_LIMITS,
        retry: BackoffPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
        client: Any | None = None,
        logger: Logger | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_name = stream_name
        # Without an explicit destination, the one configured in the environment (never none:
        # the settings refuse to load without one).
        if dead_letters is None:
            dead_letters = dead_letter_sink_from_settings(load_settings(EdgeSettings))
        self.dead_letters = dead_letters
        self.aggregation = aggregation
        self.limits = limits
        self.retry = retry or BackoffPolicy()
        # One attempt per SDK call: this class retries only the failed entries itself, and the
        # SDK's retries would resend the whole batch and spend the budget unseen.
        self.client = client or boto3.client(
            "kinesis", config=_aws_config(connect_timeout, read_timeout, 1)
        )
        self.logger = logger or Logger(service="sluice-edge")
        self.rng = rng or random.Random()
        self.sleep, self.clock = sleep, clock

    @classmethod
    def from_settings(
        cls, settings: EdgeSettings, *, logger: Logger | None = None
    ) -> KinesisPublisher:
        return cls(
            settings.stream_name,
            dead_letter_sink_from_settings(settings),
            aggregation=settings.aggregation,
            limits=settings.put_limits(),
            retry=settings.retry_policy(),
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            logger=logger,
        )

    @tracer.capture_method(capture_response=False)
    def publish(
        self, envelopes: Iterable[Envelope], correlation_id: str | None = None
    ) -> PublishReport:
        """Send every envelope or dead-letter it; raises ``DeadLetterDeliveryError`` only when the
        dead-letter destination fails as well. ``correlation_id``: the request's, for envelopes
        without one (``sluice.edges.delivery.plan_delivery``)."""
        plan = plan_delivery(
            envelopes,
            aggregated=self.aggregation,
            limits=self.limits,
            correlation_id=correlation_id,
        )
        report = PublishReport(too_large=len(plan.too_large))
        started = self.clock()
        undelivered: list[tuple[OutgoingEnvelope, str]] = []
        for batch in plan.batches:
            result = self._put_batch(batch, started)
            report.attempts += result.attempts
            report.kinesis_records += len(result.delivered)
            report.sent += sum(len(entry.envelopes) for entry in result.delivered)
            undelivered.extend(
                (envelope, reason)
                for entry, reason in result.undelivered
                for envelope in entry.envelopes
            )
        if undelivered:
            self._dead_letter(undelivered)
            report.failed_to_dead_letter = len(undelivered)
        return report

    def _put_batch(self, batch: list[KinesisEntry], started: float) -> _BatchResult:
        result = _BatchResult()
        pending = batch
        while True:
            result.attempts += 1
            retry, reason = self._attempt(pending, result)
            if not retry:
                return result
            delay = self.retry.next_delay(result.attempts, self.clock() - started, self.rng)
            if delay is None:
                reason = f"gave up after {result.attempts} attempts: {reason}"
                result.undelivered.extend((entry, reason) for entry in retry)
                return result
            self.logger.debug(
                "retrying PutRecords entries",
                extra={"entries": len(retry), "delay_s": round(delay, 3), "reason": reason},
            )
            self.sleep(delay)
            pending = retry

    def _attempt(
        self, pending: list[KinesisEntry], result: _BatchResult
    ) -> tuple[list[KinesisEntry], str]:
        """One PutRecords call; returns the entries to retry and why."""
        try:
            response = self.client.put_records(
                StreamName=self.stream_name,
                Records=[entry.request_entry() for entry in pending],
            )
        except ClientError as err:
            error = aws_error(err) or AwsError("", str(err), 0)
            reason = f"{error.code or error.status}: {error.message or err}"
            if is_retryable_call_error(error.code, error.status):
                return pending, reason
            # A missing stream or a denied call will not heal within the budget.
            result.undelivered.extend((entry, f"not retryable: {reason}") for entry in pending)
            return [], reason
        except (HTTPClientError, BotoConnectionError) as err:
            # Connect or read timeout, connection reset: the call may or may not have landed, so
            # the whole batch is sent again (a duplicate keeps its event ids; a loss is final).
            return pending, f"{type(err).__name__}: {err}"
        outcome = classify_results(pending, response.get("Records", []))
        result.delivered.extend(outcome.delivered)
        result.undelivered.extend(
            (failure.entry, f"not retryable: {failure.code}: {failure.message}")
            for failure in outcome.rejected
        )
        if not outcome.retry:
            return [], ""
        first = outcome.retry[0]
        reason = f"{first.code}: {first.message} ({len(outcome.retry)} of {len(pending)} entries)"
        return [failure.entry for failure in outcome.retry], reason

    def _dead_letter(self, undelivered: list[tuple[OutgoingEnvelope, str]]) -> None:
        now = datetime.now(UTC)
        letters: list[DeadLetter] = []
        by_reason: dict[str, list[OutgoingEnvelope]] = {}
        for envelope, reason in undelivered:
            by_reason.setdefault(reason, []).append(envelope)
        for reason, envelopes in by_reason.items():
            letters.extend(delivery_failed_letters(envelopes, reason, now=now))
        self.logger.warning(
            "stream did not take envelopes; writing delivery_failed dead letters",
            extra={"envelopes": len(letters), "reasons": list(by_reason)[:5]},
        )
        self.dead_letters.write(letters)
