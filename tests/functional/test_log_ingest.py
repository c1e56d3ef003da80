"""The web-log edge handler with S3 ObjectCreated and CloudWatch Logs subscription events, on moto.

Log files are real objects in a moto bucket, streamed by the handler through GetObject; the stream
is read back to check ids (origin + position), records and dead letters.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
from types import ModuleType
from typing import Any

import pytest
from faults import FaultProxy
from kinesis_reader import read_stream

from edge_lambdas.shared.events import (
    LocalContext,
    cloudwatch_logs_event,
    log_event_id,
    s3_object_created_event,
)
from edge_lambdas.shared.publisher import DeadLetterDeliveryError
from sluice.core.contracts import ErrorType, WebAccessLog
from sluice.core.errors import ConfigError
from sluice.edges.ingest import iter_bounded_lines
from sluice.stream.envelopes import weblog_event_id


def access_line(i: int) -> str:
    return (
        f"203.0.113.{i % 250} - - [26/Nov/2026:12:{i // 60 % 60:02d}:{i % 60:02d} +0000] "
        f'"GET /items/{i}?page=2 HTTP/1.1" 200 {100 + i} "https://example.com/" '
        f'"Mozilla/5.0 (X11; Linux x86_64)"'
    )


def log_file(count: int) -> bytes:
    return "".join(access_line(i) + "\n" for i in range(count)).encode()


@pytest.fixture
def logs_bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="sluice-access-logs")
    return "sluice-access-logs"


def run_s3(handler: ModuleType, s3: Any, bucket: str, key: str, data: bytes) -> dict[str, Any]:
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    event = s3_object_created_event(bucket, key, len(data))
    summary: dict[str, Any] = handler.lambda_handler(
        event, LocalContext(function_name="log_ingest")
    )
    return summary


def test_an_s3_log_file_is_streamed_in_batches_with_ids_from_object_and_line(
    monkeypatch: pytest.MonkeyPatch,
    fault_proxy: FaultProxy,
    load_handler: Any,
    s3: Any,
    logs_bucket: str,
    kinesis: Any,
    stream: str,
) -> None:
    # GIVEN a 12,000-line access log and a handler publishing every 2,000 lines
    monkeypatch.setenv("SLUICE_BATCH_LINES", "2000")
    handler = load_handler("edge_lambdas.log_ingest.handler")
    key = "nginx/access.log-20261126"

    # WHEN the object-created notification arrives
    summary = run_s3(handler, s3, logs_bucket, key, log_file(12_000))

    # THEN every line is on the stream once, with the id of its object and line number
    contents = read_stream(kinesis, stream)
    origin = f"s3://{logs_bucket}/{key}"
    assert contents.event_ids == {weblog_event_id(origin, n): 1 for n in range(1, 12_001)}
    assert summary["emitted"] == summary["sent"] == 12_000 and summary["dead_lettered"] == {}
    # AND it was published as it streamed: one PutRecords call per batch of lines
    assert len(fault_proxy.calls) == 6
    first = WebAccessLog.model_validate(contents.records()[0].payload)
    assert first.path is not None and first.path.startswith("/items/") and first.status == 200


def test_reading_the_same_object_again_yields_the_same_ids(
    log_handler: ModuleType, s3: Any, logs_bucket: str, kinesis: Any, stream: str
) -> None:
    # GIVEN an object processed once WHEN its notification is delivered again
    data = log_file(50)
    run_s3(log_handler, s3, logs_bucket, "a.log", data)
    log_handler.lambda_handler(
        s3_object_created_event(logs_bucket, "a.log", len(data)), LocalContext()
    )

    # THEN every id is on the stream exactly twice: the repeat is de-duplicable
    assert set(read_stream(kinesis, stream).event_ids.values()) == {2}


def test_gzip_objects_and_url_encoded_keys_are_read(
    log_handler: ModuleType, s3: Any, logs_bucket: str, kinesis: Any, stream: str
) -> None:
    # GIVEN a gzip log under a key with spaces and non-ASCII characters (URL-encoded in the event)
    key = "nginx/web 1/accès.log.gz"
    summary = run_s3(log_handler, s3, logs_bucket, key, gzip.compress(log_file(300)))

    # THEN every line arrives, with ids from the decoded key
    contents = read_stream(kinesis, stream)
    assert summary["emitted"] == 300
    assert set(contents.event_ids) == {
        weblog_event_id(f"s3://{logs_bucket}/{key}", n) for n in range(1, 301)
    }


def test_bad_lines_are_dead_lettered_and_the_rest_is_kept(
    log_handler: ModuleType, s3: Any, logs_bucket: str, kinesis: Any, stream: str
) -> None:
    # GIVEN a file with an unparseable line, a non-UTF-8 line, a 200 kB line and a blank line
    lines = [
        access_line(1).encode(),
        b"this is not an access log line",
        access_line(2).encode().replace(b"Mozilla", b"Mozi\xff\xfella"),
        b"x" * 200_000,
        b"",
        access_line(3).encode(),
    ]

    # WHEN it is processed
    summary = run_s3(log_handler, s3, logs_bucket, "bad.log", b"\n".join(lines) + b"\n")

    # THEN the good lines are records with their own line numbers and the bad ones dead letters
    contents = read_stream(kinesis, stream)
    origin = f"s3://{logs_bucket}/bad.log"
    assert {e.event_id for e in contents.records()} == {
        weblog_event_id(origin, 1),
        weblog_event_id(origin, 6),
    }
    letters = sorted(contents.dead_letters(), key=lambda letter: letter.error_type.value)
    assert [letter.error_type for letter in letters] == [
        ErrorType.INVALID_ENCODING,
        ErrorType.TOO_LARGE,
        ErrorType.UNPARSEABLE_LINE,
    ]
    assert "line 4: 200000 bytes" in letters[1].message
    assert letters[1].raw_size == 200_000 and letters[1].raw_truncated
    assert summary["dead_lettered"] == {
        "unparseable_line": 1,
        "invalid_encoding": 1,
        "too_large": 1,
    }


def test_a_truncated_gzip_keeps_the_lines_before_the_break_and_dead_letters_the_break(
    log_handler: ModuleType, s3: Any, logs_bucket: str, kinesis: Any, stream: str
) -> None:
    # GIVEN a gzip log cut off in the middle
    data = gzip.compress(log_file(2000))
    summary = run_s3(log_handler, s3, logs_bucket, "cut.log.gz", data[: len(data) // 2])

    # THEN the lines read before the break are records, and the break is one dead letter
    contents = read_stream(kinesis, stream)
    records, (letter,) = contents.records(), contents.dead_letters()
    origin = f"s3://{logs_bucket}/cut.log.gz"
    assert 0 < len(records) < 2000 and summary["emitted"] == len(records)
    assert {e.event_id for e in records} == {
        weblog_event_id(origin, n) for n in range(1, len(records) + 1)
    }
    assert letter.error_type is ErrorType.INVALID_ENCODING and "broken after line" in letter.message


def test_long_lines_are_read_past_without_holding_them() -> None:
    # GIVEN a 64 MiB line without a newline, then a short line
    class Zeros(io.RawIOBase):
        def __init__(self, size: int) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = b"0" * n
            self.left -= n
            return n

    combined = io.BufferedReader(_Chain(Zeros(64 * 1024 * 1024), io.BytesIO(b"\nshort\n")))

    # WHEN read as bounded lines
    tracemalloc.start()
    try:
        lines = list(iter_bounded_lines(combined, 65_536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # THEN the long line is reported with its size and a bounded sample; memory stayed small
    assert [(line.position, line.size, len(line.data)) for line in lines] == [
        (1, 64 * 1024 * 1024, 65_537),
        (2, 5, 5),
    ]
    assert peak < 2 * 1024 * 1024


class _Chain(io.RawIOBase):
    """Several readable streams read one after the other."""

    def __init__(self, *parts: Any) -> None:
        self.parts = list(parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self.parts:
            chunk = self.parts[0].read(len(buffer))
            if chunk:
                buffer[: len(chunk)] = chunk
                return len(chunk)
            self.parts.pop(0)
        return 0


def test_cloudwatch_logs_events_use_the_log_event_ids(
    log_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # GIVEN a CloudWatch Logs subscription delivery of 300 access-log messages
    messages = [access_line(i) for i in range(300)]
    event = cloudwatch_logs_event(
        messages, log_group="/nginx/access", log_stream="web-1", seed="s1"
    )

    # WHEN handled
    summary = log_handler.lambda_handler(event, LocalContext())

    # THEN each message is a record whose id comes from its log event id
    origin = "cloudwatch:/nginx/access:web-1"
    expected = {weblog_event_id(origin, log_event_id("s1", i)): 1 for i in range(300)}
    assert read_stream(kinesis, stream).event_ids == expected
    assert summary["emitted"] == 300


def test_control_messages_are_skipped_and_undecodable_data_is_dead_lettered(
    log_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # GIVEN a control message and an event whose awslogs.data is not base64 gzip
    control = cloudwatch_logs_event([], message_type="CONTROL_MESSAGE")
    broken = {"awslogs": {"data": "bm90IGd6aXA="}}  # base64 of "not gzip"

    # WHEN both are handled
    assert log_handler.lambda_handler(control, LocalContext())["received"] == 0
    summary = log_handler.lambda_handler(broken, LocalContext())

    # THEN only the broken one left a trace: an invalid_encoding dead letter with the data
    (letter,) = read_stream(kinesis, stream).dead_letters()
    assert summary["dead_lettered"] == {"invalid_encoding": 1}
    assert letter.error_type is ErrorType.INVALID_ENCODING and letter.raw == "bm90IGd6aXA="


def test_an_event_of_neither_shape_is_a_dead_letter(
    log_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    summary = log_handler.lambda_handler({"Records": [{"eventSource": "aws:sqs"}]}, LocalContext())
    (letter,) = read_stream(kinesis, stream).dead_letters()
    assert summary["dead_lettered"] == {"schema_violation": 1}
    assert "aws:sqs" in letter.raw


def test_an_object_deleted_before_processing_is_skipped(
    log_handler: ModuleType, logs_bucket: str, kinesis: Any, stream: str
) -> None:
    event = s3_object_created_event(logs_bucket, "gone.log", 10)
    assert log_handler.lambda_handler(event, LocalContext())["received"] == 0
    assert read_stream(kinesis, stream).envelopes == []


def test_a_custom_nginx_log_format_from_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch, load_handler: Any, kinesis: Any, stream: str
) -> None:
    # GIVEN SLUICE_LOG_FORMAT with a custom nginx log_format
    monkeypatch.setenv(
        "SLUICE_LOG_FORMAT", '$remote_addr [$time_local] "$request" $status $request_time $host'
    )
    handler = load_handler("edge_lambdas.log_ingest.handler")
    line = '198.51.100.7 [26/Nov/2026:12:00:00 +0000] "POST /api HTTP/2.0" 201 0.042 shop.example'

    # WHEN a line in that format arrives THEN it is parsed with that format
    handler.lambda_handler(cloudwatch_logs_event([line]), LocalContext())
    (record,) = read_stream(kinesis, stream).records()
    parsed = WebAccessLog.model_validate(record.payload)
    assert (parsed.status, parsed.request_time, parsed.vhost) == (201, 0.042, "shop.example")


def test_a_log_format_that_does_not_compile_fails_the_cold_start(
    monkeypatch: pytest.MonkeyPatch, load_handler: Any
) -> None:
    monkeypatch.setenv("SLUICE_LOG_FORMAT", "$remote_addr only")
    with pytest.raises(ConfigError, match="SLUICE_LOG_FORMAT"):
        load_handler("edge_lambdas.log_ingest.handler")


def test_when_stream_and_dead_letter_destination_fail_the_invocation_fails(
    fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Any,
    s3: Any,
    logs_bucket: str,
) -> None:
    # GIVEN a failing stream and a missing dead-letter bucket
    fault_proxy.server_error(times=None)
    monkeypatch.setenv("SLUICE_DEAD_LETTER_BUCKET", "sluice-no-such-bucket")
    handler = load_handler("edge_lambdas.log_ingest.handler")

    # WHEN / THEN the handler raises, so Lambda retries the event
    with pytest.raises(DeadLetterDeliveryError):
        run_s3(handler, s3, logs_bucket, "x.log", log_file(10))


def test_a_junk_file_publishes_the_capped_letters_per_file_and_counts_every_line(
    load_handler: Any,
    s3: Any,
    logs_bucket: str,
    kinesis: Any,
    stream: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the log edge with batches of 50 lines and a cap of 4 letters (per file)
    monkeypatch.setenv("SLUICE_BATCH_LINES", "50")
    monkeypatch.setenv("SLUICE_MAX_DEAD_LETTERS", "4")
    handler = load_handler("edge_lambdas.log_ingest.handler")
    # WHEN a file of 120 junk lines, blank lines and one good line is processed
    data = b"1\n" * 120 + b"\n" * 3 + access_line(0).encode() + b"\n"
    summary = run_s3(handler, s3, logs_bucket, "junk.log", data)
    # THEN the file publishes 4 letters and one summary over its 3 batches; every line is counted
    letters = read_stream(kinesis, stream).dead_letters()
    assert sorted(letter.error_type.value for letter in letters) == sorted(
        ["unparseable_line"] * 4 + ["too_many_errors"]
    )
    assert summary["dead_lettered"] == {"unparseable_line": 120, "too_many_errors": 1}
    assert (summary["received"], summary["emitted"], summary["skipped"]) == (124, 1, 3)
