"""Web-log edge Lambda: nginx access logs from S3 files or CloudWatch Logs in, Kinesis out.

In (two triggers):
- S3 ``ObjectCreated`` notifications for rotated access-log files, plain or gzip. Each object is
  streamed line by line from the GetObject body and published every ``SLUICE_BATCH_LINES`` lines, so
  memory stays bounded whatever the file size. Event ids come from ``s3://bucket/key`` + line
  number: processing the same object again yields the same ids.
- CloudWatch Logs subscription events (base64 gzip ``awslogs.data``); event ids come from the log
  group and stream + the log event id. Control messages are skipped.
Out: one envelope per parsed line (``SLUICE_LOG_FORMAT``: an nginx log_format string or ``auto``),
and a summary of counters as the return value (received = emitted + dead-lettered + skipped blank
lines; at most ``SLUICE_MAX_DEAD_LETTERS`` letters per S3 object or CloudWatch Logs event, the
rest in one ``too_many_errors`` letter in its last published batch).
Dead letters travel the stream as dead-letter envelopes: each unparseable, non-UTF-8 or over-long
line, a broken gzip file (the lines before the break are kept), undecodable ``awslogs.data``, an
event of neither shape. Envelopes the stream would not take go to the S3/SQS dead-letter destination.
A failure to read an object, or of the dead-letter destination, raises: the invocation is retried,
and the deterministic ids make re-published lines de-duplicable.
"""

from __future__ import annotations

import binascii
import zlib
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import boto3
import orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import CloudWatchLogsEvent, S3Event
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from botocore.exceptions import ClientError

from edge_lambdas.log_ingest.settings import LogIngestSettings
from edge_lambdas.shared.publisher import KinesisPublisher
from edge_lambdas.shared.settings import load_settings
from edge_lambdas.shared.telemetry import NAMESPACE, record_metrics
from sluice.core.aws_errors import aws_error_code
from sluice.core.contracts import Envelope, ErrorType, Source, correlation_id
from sluice.core.deadletters import BatchResult, dead_letter
from sluice.core.inputs import maybe_gunzip
from sluice.edges.delivery import PublishReport, with_dead_letters
from sluice.edges.ingest import (
    LOG_STAGE,
    IngestCounts,
    LogLine,
    log_dead_letters,
    log_lines_to_envelopes,
    read_log_stream,
)
from sluice.parsing.weblog import LogParser

__all__ = ["lambda_handler"]

SERVICE = "log_ingest"
_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404"})

# Cold start: invalid settings (a log format that does not compile, ...) fail the init here.
settings = load_settings(LogIngestSettings)
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
parser = LogParser(settings.log_format)
horizon = settings.time_horizon()
publisher = KinesisPublisher.from_settings(settings, logger=logger)
s3 = boto3.client(
    "s3",
    config=Config(
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.s3_read_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": 3},
    ),
)


class _Run:
    """Counters and publishing for one invocation."""

    def __init__(self, request_id: str | None = None) -> None:
        self.counts = IngestCounts()
        self.report = PublishReport()
        self.request_id = request_id
        """The invocation's correlation id, given to every envelope it publishes."""

    def publish(self, result: BatchResult[Envelope]) -> None:
        self.counts.add(
            len(result.valid),
            result.dead_letters,
            suppressed=result.suppressed,
            skipped=result.skipped,
        )
        envelopes = with_dead_letters(result.valid, result.dead_letters)
        if envelopes:
            self.report.add(publisher.publish(envelopes, self.request_id))

    def summary(self) -> dict[str, Any]:
        return {
            "received": self.counts.received,
            "emitted": self.counts.emitted,
            "skipped": self.counts.skipped,
            "dead_lettered": self.counts.dead_lettered,
            **self.report.as_dict(),
        }


def _rejected_event(error_type: ErrorType, message: str, raw: bytes | str) -> BatchResult[Envelope]:
    result: BatchResult[Envelope] = BatchResult()
    result.dead_letters.append(dead_letter(Source.WEBLOG, LOG_STAGE, error_type, message, raw))
    return result


@tracer.capture_method(capture_response=False)
def ingest_s3_object(record: S3EventRecord, run: _Run) -> None:
    if not record.event_name.startswith("ObjectCreated:"):
        logger.info("skipping S3 event", extra={"event_name": record.event_name})
        return
    bucket = record.s3.bucket.name
    obj = record.s3.get_object
    key = unquote_plus(obj.key)  # S3 notifications URL-encode keys ('+' for spaces)
    origin = f"s3://{bucket}/{key}"
    version = {"VersionId": obj.version_id} if obj.version_id else {}
    try:
        response = s3.get_object(Bucket=bucket, Key=key, **version)
    except ClientError as err:
        if aws_error_code(err) in _MISSING_OBJECT_CODES:
            # Deleted before we got to it: nothing to read and nothing a retry would find.
            logger.warning("log object is gone", extra={"object": origin})
            metrics.add_metric(name="objects_missing", unit=MetricUnit.Count, value=1)
            return
        raise  # access denied, throttling...: fail the invocation so that it is retried
    with closing(response["Body"]) as body:
        batches = read_log_stream(
            maybe_gunzip(body),
            origin,
            parser,
            batch_lines=settings.batch_lines,
            max_line_bytes=settings.max_line_bytes,
            horizon=horizon,
            max_dead_letters=settings.max_dead_letters,
        )
        for batch in batches:
            run.publish(batch)
    logger.info("log object ingested", extra={"object": origin, **run.summary()})


def _log_lines(event: CloudWatchLogsEvent) -> tuple[str, list[LogLine]] | None:
    data = event.parse_logs_data()
    if data.message_type != "DATA_MESSAGE":
        return None  # CONTROL_MESSAGE: CloudWatch checking that the destination is reachable
    origin = f"cloudwatch:{data.log_group}:{data.log_stream}"
    lines = [LogLine(e.get_id, e.message, len(e.message)) for e in data.log_events]
    return origin, lines


@tracer.capture_method(capture_response=False)
def ingest_cloudwatch(event: CloudWatchLogsEvent, run: _Run) -> None:
    try:
        decoded = _log_lines(event)
    except (KeyError, TypeError, ValueError, binascii.Error, zlib.error) as err:
        # ValueError covers invalid JSON and UTF-8; retrying the same payload cannot help.
        awslogs = event.get("awslogs")
        raw = str(awslogs.get("data", "")) if isinstance(awslogs, dict) else orjson.dumps(awslogs)
        run.publish(
            _rejected_event(ErrorType.INVALID_ENCODING, f"undecodable awslogs.data: {err}", raw)
        )
        return
    if decoded is None:
        logger.info("skipping CloudWatch Logs control message")
        return
    origin, lines = decoded
    # One dead-letter cap for the whole event (up to 10,000 log events), its summary in the last batch.
    now = datetime.now(UTC)
    letters = log_dead_letters(LOG_STAGE, settings.max_dead_letters, now)
    chunks = list(_chunks(lines, settings.batch_lines))
    for number, chunk in enumerate(chunks, 1):
        batch = log_lines_to_envelopes(
            parser,
            chunk,
            origin,
            max_line_bytes=settings.max_line_bytes,
            now=now,
            horizon=horizon,
            max_dead_letters=settings.max_dead_letters,
            letters=letters,
            last=number == len(chunks),
        )
        run.publish(batch)


def _chunks(lines: list[LogLine], size: int) -> Iterator[list[LogLine]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def _is_s3_event(event: dict[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # One correlation id per invocation (its request id): every row it lands, and its log lines.
    request_id = correlation_id(context.aws_request_id)
    logger.set_correlation_id(request_id)
    run = _Run(request_id)
    if isinstance(event, dict) and "awslogs" in event:
        ingest_cloudwatch(CloudWatchLogsEvent(event), run)
    elif isinstance(event, dict) and _is_s3_event(event):
        for record in S3Event(event).records:
            ingest_s3_object(record, run)
    else:
        run.publish(
            _rejected_event(
                ErrorType.SCHEMA_VIOLATION,
                "event is neither an S3 notification nor a CloudWatch Logs subscription",
                orjson.dumps(event, default=str),
            )
        )
    record_metrics(metrics, SERVICE, run.counts, run.report)
    return run.summary()
