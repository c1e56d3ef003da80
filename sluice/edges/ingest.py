"""Edge ingestion: HTTP request bodies and log streams in, envelopes and dead letters out.

IoT over HTTP (``ingest_iot_request``)
In: an ``IotRequest``: method, the body as API Gateway passes it (text, or base64 with a flag), content
type and content encoding.
Out: an ``IotIngestOutcome``: the envelopes to publish (readings, then dead letters as envelopes),
the HTTP status and the response summary ``{"accepted", "rejected", "errors": [...]}``.
A body may be one reading, a JSON array of readings, or NDJSON (one reading per line), optionally
gzip-compressed (``Content-Encoding: gzip``). It is accepted (202) when at least one reading is good;
bad readings are reported and dead-lettered without failing the good ones; 400 only when nothing is
usable.
Dead letters (stage ``edge.iot``): a body over the size limit, before or after decompression
(``too_large``, 413; decompression is streamed and stops at the limit, so a gzip bomb costs at most
the limit); an unsupported content type or encoding (``schema_violation``, 415); invalid base64 or
gzip (``invalid_encoding``, 400); an empty body (``invalid_json``, 400); and every reading the IoT
parser refuses, with the parser's reason.

Web logs (``read_log_stream`` for files, ``log_lines_to_envelopes`` for lines with ids)
In: a binary stream (plain or gzip) and its origin (``s3://bucket/key``), or log messages with ids.
Out: batches of envelopes whose event ids are origin + line number (or log event id), so reading the
same object again yields the same ids. Memory stays bounded: one line of at most ``max_line_bytes``
and one batch are held at a time, whatever the file size.
Dead letters (stage ``edge.logs``): each line the log parser refuses (its reason), an over-long line
(``too_large``, keeping its first bytes), a compressed stream that breaks off (``invalid_encoding``;
the lines before the break are kept).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from sluice.core.contracts import DeadLetter, Envelope, ErrorType, Source, Stage, make_event_id
from sluice.core.deadletters import BatchResult, dead_letter
from sluice.core.errors import SluiceError
from sluice.core.inputs import gunzip_bounded
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import MAX_LINE_BYTES, LogParser
from sluice.stream.envelopes import wrap_access_log, wrap_dead_letter, wrap_reading

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DEFAULT_MAX_ERRORS_REPORTED",
    "LOG_STAGE",
    "BodyLimits",
    "IngestCounts",
    "IotRequest",
    "LogLine",
    "ingest_iot_request",
    "iter_bounded_lines",
    "log_lines_to_envelopes",
    "read_log_stream",
    "service_unavailable_body",
]

IOT_STAGE = Stage.EDGE_IOT
LOG_STAGE = Stage.EDGE_LOGS

JSON_CONTENT_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "text/plain",
        # curl's default for -d: devices and scripts that post JSON with curl send it.
        "application/x-www-form-urlencoded",
    }
)
"""Content types an IoT body may declare (also any ``application/*+json``, or none at all)."""
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})
MAX_MESSAGE_CHARS_IN_RESPONSE = 300


DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_ERRORS_REPORTED = 10
"""The defaults of ``BodyLimits``, which the IoT Lambda's settings (``SLUICE_MAX_BODY_BYTES``, ...)
share."""


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Bounds on one IoT request body."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Bytes as received (after base64 decoding, before decompression)."""
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    """Bytes after decompression; decompression stops as soon as this is exceeded."""
    max_errors_reported: int = DEFAULT_MAX_ERRORS_REPORTED
    """Rejections described in the response; every one is dead-lettered regardless."""

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_decompressed_bytes) < 1:
            raise ValueError("body limits must be positive")
        if self.max_errors_reported < 0:
            raise ValueError("max_errors_reported must be >= 0")


DEFAULT_BODY_LIMITS = BodyLimits()


@dataclass(frozen=True, slots=True)
class IotRequest:
    """The parts of an HTTP request the IoT edge looks at."""

    body: str | bytes | None
    is_base64_encoded: bool = False
    content_type: str | None = None
    content_encoding: str | None = None
    method: str = "POST"


@dataclass(slots=True)
class IotIngestOutcome:
    """What to publish for one request and what to answer."""

    status: int
    envelopes: list[Envelope]
    accepted: int
    dead_letters: list[DeadLetter]
    errors: list[dict[str, str]]

    @property
    def rejected(self) -> int:
        return len(self.dead_letters)

    def response_body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected, "errors": self.errors}


class BodyRejected(SluiceError):
    """The whole body is refused with this HTTP status and dead-letter reason."""

    def __init__(self, status: int, error_type: ErrorType, message: str, raw: bytes | str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.raw = status, error_type, message, raw


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def decode_request_body(request: IotRequest, limits: BodyLimits = DEFAULT_BODY_LIMITS) -> bytes:
    """The body as bytes: base64 undone, gzip undone, content type and sizes checked.

    Raises ``BodyRejected``, which ``ingest_iot_request`` turns into a dead letter and a 4xx.
    """
    raw: bytes
    if request.body is None:
        raw = b""
    elif isinstance(request.body, bytes):
        raw = request.body
    elif request.is_base64_encoded:
        # A base64 text is 4/3 of its bytes: refuse an oversized one before decoding it.
        if len(request.body) * 3 // 4 > limits.max_body_bytes + 3:
            raise BodyRejected(
                413,
                ErrorType.TOO_LARGE,
                f"body exceeds {limits.max_body_bytes} bytes",
                request.body,
            )
        try:
            raw = base64.b64decode(request.body, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BodyRejected(
                400, ErrorType.INVALID_ENCODING, f"body is not valid base64: {err}", request.body
            ) from None
    else:
        # A JSON event can carry lone surrogates ("\ud800"); they become invalid UTF-8 bytes (a
        # dead letter later), never an exception here.
        raw = request.body.encode("utf-8", "surrogatepass")
    if len(raw) > limits.max_body_bytes:
        raise BodyRejected(
            413,
            ErrorType.TOO_LARGE,
            f"body of {len(raw)} bytes exceeds {limits.max_body_bytes} bytes",
            raw,
        )
    media_type = _media_type(request.content_type)
    if media_type and media_type not in JSON_CONTENT_TYPES and not media_type.endswith("+json"):
        raise BodyRejected(
            415,
            ErrorType.SCHEMA_VIOLATION,
            f"unsupported content type {media_type!r}: send application/json or NDJSON",
            raw,
        )
    encoding = _media_type(request.content_encoding)
    if encoding in GZIP_ENCODINGS:
        try:
            raw = gunzip_bounded(raw, limits.max_decompressed_bytes)
        except OverflowError as err:
            raise BodyRejected(413, ErrorType.TOO_LARGE, str(err), raw) from None
        except ValueError as err:
            raise BodyRejected(400, ErrorType.INVALID_ENCODING, str(err), raw) from None
    elif encoding not in IDENTITY_ENCODINGS:
        raise BodyRejected(
            415,
            ErrorType.SCHEMA_VIOLATION,
            f"unsupported content encoding {encoding!r}: send gzip or none",
            raw,
        )
    elif len(raw) > limits.max_decompressed_bytes:
        raise BodyRejected(
            413, ErrorType.TOO_LARGE, f"body exceeds {limits.max_decompressed_bytes} bytes", raw
        )
    if not raw.strip():
        raise BodyRejected(
            400, ErrorType.INVALID_JSON, "empty body: send one or more readings", raw
        )
    return raw


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def split_records(body: bytes) -> list[tuple[str, bytes]]:
    """(where, raw record) pairs: ``body`` for one JSON value, ``index N`` per array element (0-based),
    ``line N`` per NDJSON line (1-based, blank lines skipped).

    A body that is not one JSON value is NDJSON, unless none of its lines is JSON either: then it is
    one broken document and stays one record (one dead letter rather than one per fragment).
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        lines = [
            (f"line {number}", line.rstrip(b"\r"))
            for number, line in enumerate(body.split(b"\n"), 1)
            if line.strip()
        ]
        if len(lines) > 1 and any(_is_json(line) for _, line in lines):
            return lines
        return [("body", body)]
    if isinstance(decoded, list):
        # Each element gets its own size limit and its own dead letter; the parser flattens nesting.
        return [(f"index {index}", orjson.dumps(item)) for index, item in enumerate(decoded)]
    return [("body", body)]


def _error_entry(where: str, letter: DeadLetter) -> dict[str, str]:
    message = letter.message
    if len(message) > MAX_MESSAGE_CHARS_IN_RESPONSE:
        message = message[: MAX_MESSAGE_CHARS_IN_RESPONSE - 1] + "…"
    return {
        "at": where,
        "error_type": letter.error_type.value,
        "message": message,
        "dead_letter_id": letter.dead_letter_id,
    }


def ingest_iot_request(
    request: IotRequest,
    limits: BodyLimits = DEFAULT_BODY_LIMITS,
    *,
    now: datetime | None = None,
) -> IotIngestOutcome:
    """Turn one HTTP request into envelopes and a response. Never raises for bad input."""
    now = now or datetime.now(UTC)
    if request.method.upper() != "POST":
        # Not data, so no dead letter: API Gateway routes only POST here; this guards local use.
        refusal = {"at": "request", "error_type": "method_not_allowed", "message": "use POST"}
        return IotIngestOutcome(405, [], 0, [], [refusal])
    try:
        body = decode_request_body(request, limits)
    except BodyRejected as rejected:
        letter = dead_letter(
            Source.IOT, IOT_STAGE, rejected.error_type, rejected.message, rejected.raw,
            first_seen=now,
        )  # fmt: skip
        reported = [_error_entry("body", letter)][: limits.max_errors_reported]
        return IotIngestOutcome(
            rejected.status, [wrap_dead_letter(letter, now)], 0, [letter], reported
        )
    envelopes: list[Envelope] = []
    letters: list[DeadLetter] = []
    errors: list[dict[str, str]] = []
    # Two equal bad records of one body are two rejections: their ids include where they were in
    # the body (and the body itself, so a client retry of the same body gets the same ids).
    body_digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    for where, raw in split_records(body):
        parsed = parse_iot_batch((raw,), stage=IOT_STAGE)
        envelopes.extend(wrap_reading(reading, now) for reading in parsed.valid)
        for index, letter in enumerate(parsed.dead_letters):
            letter = letter.model_copy(
                update={
                    "dead_letter_id": make_event_id(
                        Source.IOT, IOT_STAGE, letter.error_type.value, body_digest, where, index
                    )
                }
            )
            if len(errors) < limits.max_errors_reported:
                errors.append(_error_entry(where, letter))
            letters.append(letter)
    accepted = len(envelopes)
    if not accepted and not letters:  # ``[]`` or ``[[], []]``: valid JSON, no reading
        letter = dead_letter(
            Source.IOT, IOT_STAGE, ErrorType.SCHEMA_VIOLATION, "the body holds no readings", body,
            first_seen=now,
        )  # fmt: skip
        letters.append(letter)
        errors = [_error_entry("body", letter)][: limits.max_errors_reported]
    envelopes.extend(wrap_dead_letter(letter, now) for letter in letters)
    return IotIngestOutcome(202 if accepted else 400, envelopes, accepted, letters, errors)


def service_unavailable_body() -> dict[str, Any]:
    """The 503 answer when neither the stream nor the dead-letter destination took the data."""
    return {
        "accepted": 0,
        "rejected": 0,
        "errors": [
            {
                "at": "request",
                "error_type": ErrorType.DELIVERY_FAILED.value,
                "message": "the stream is unavailable; retry later",
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log line and where it was: a line number in a file, or a log event id."""

    position: int | str
    data: bytes | str
    size: int
    """Bytes of the whole line; more than ``len(data)`` when an over-long line was cut."""


def iter_bounded_lines(
    stream: IO[bytes], max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[LogLine]:
    """Numbered lines (1-based, line endings removed); never reads more than one bounded line ahead.

    A line longer than ``max_line_bytes`` is read past in chunks and yielded cut to
    ``max_line_bytes + 1`` bytes with its real ``size``, so one newline-free gigabyte costs no memory.
    """
    number = 0
    while True:
        chunk = stream.readline(max_line_bytes + 1)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n") or len(chunk) <= max_line_bytes:
            line = chunk.rstrip(b"\r\n")
            yield LogLine(number, line, len(line))
            continue
        size = len(chunk)
        while True:
            more = stream.readline(max_line_bytes)
            if not more:
                break
            if more.endswith(b"\n"):
                size += len(more.rstrip(b"\r\n"))
                break
            size += len(more)
        yield LogLine(number, chunk, size)


def log_lines_to_envelopes(
    parser: LogParser,
    lines: Iterable[LogLine],
    origin: str,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    stage: Stage = LOG_STAGE,
    now: datetime | None = None,
) -> BatchResult[Envelope]:
    """Parse lines into envelopes with ids from ``origin`` + position; blank lines are skipped."""
    now = now or datetime.now(UTC)
    result: BatchResult[Envelope] = BatchResult()
    parse = parser.parse_batch
    for line in lines:
        if line.size > max_line_bytes:
            letter = dead_letter(
                Source.WEBLOG, stage, ErrorType.TOO_LARGE,
                f"{origin} line {line.position}: {line.size} bytes > {max_line_bytes}",
                line.data, first_seen=now,
            )  # fmt: skip
            # Only a sample of the line was read; the letter still tells its real size.
            cut = letter.raw_truncated or line.size > len(line.data)
            result.dead_letters.append(
                letter.model_copy(update={"raw_size": line.size, "raw_truncated": cut})
            )
            continue
        # One line per call keeps each record paired with its position (the id needs it).
        parsed = parse((line.data,), stage=stage)
        if parsed.valid:
            result.valid.append(wrap_access_log(parsed.valid[0], origin, line.position, now))
        result.dead_letters.extend(parsed.dead_letters)
    return result


def read_log_stream(
    stream: IO[bytes],
    origin: str,
    parser: LogParser,
    *,
    batch_lines: int = 5000,
    max_line_bytes: int = MAX_LINE_BYTES,
    stage: Stage = LOG_STAGE,
    now: datetime | None = None,
) -> Iterator[BatchResult[Envelope]]:
    """Batches of envelopes and dead letters for a log file, read as it streams.

    A compressed stream that breaks off (truncated or corrupt gzip) ends the file with an
    ``invalid_encoding`` dead letter; the lines read before the break are kept.
    """
    if batch_lines < 1:
        raise ValueError("batch_lines must be >= 1")
    batch: list[LogLine] = []
    last = 0
    try:
        for line in iter_bounded_lines(stream, max_line_bytes):
            batch.append(line)
            last = int(line.position)
            if len(batch) >= batch_lines:
                yield log_lines_to_envelopes(
                    parser, batch, origin, max_line_bytes=max_line_bytes, stage=stage, now=now
                )
                batch = []
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        # Only decompression errors: a network error reading the object is not bad input and
        # must fail the invocation so that it is retried.
        result = log_lines_to_envelopes(
            parser, batch, origin, max_line_bytes=max_line_bytes, stage=stage, now=now
        )
        result.dead_letters.append(
            dead_letter(
                Source.WEBLOG, stage, ErrorType.INVALID_ENCODING,
                f"{origin}: compressed data broken after line {last}: {err}",
                f"{origin} after line {last}", first_seen=now,
            )
        )  # fmt: skip
        yield result
        return
    if batch:
        yield log_lines_to_envelopes(
            parser, batch, origin, max_line_bytes=max_line_bytes, stage=stage, now=now
        )


@dataclass(slots=True)
class IngestCounts:
    """The counters every stage reports: received, emitted, dead-lettered by reason."""

    received: int = 0
    emitted: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)

    def add(self, emitted: int, letters: Iterable[DeadLetter]) -> None:
        rejected = 0
        for letter in letters:
            reason = letter.error_type.value
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1
            rejected += 1
        self.emitted += emitted
        self.received += emitted + rejected

    @property
    def rejected(self) -> int:
        return sum(self.dead_lettered.values())
