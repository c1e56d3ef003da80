"""Edge ingestion: HTTP request bodies and log streams in, envelopes and dead letters out.

IoT over HTTP (``ingest_iot_request``)
In: an ``IotRequest``: method, the body as API Gateway passes it (text, or base64 with a flag), content
type and content encoding.
Out: an ``IotIngestOutcome``: the envelopes to publish (readings, then dead letters as envelopes),
the HTTP status and the response summary ``{"accepted", "rejected", "errors": [...]}``.
A body may be one reading, a JSON array of readings, or NDJSON (one reading per line), optionally
gzip-compressed (``Content-Encoding: gzip``). It is accepted (202) when at least one reading is good;
bad readings are reported and dead-lettered without failing the good ones; 400 only when nothing is
usable. Blank NDJSON lines are skipped and counted, never rejected; event times outside the
``TimeHorizon`` around the request's time are ``invalid_timestamp``. Never raises for bad input.
Dead letters (stage ``edge.iot``): a body over the size limit, before or after decompression
(``too_large``, 413; decompression is streamed and stops at the limit, so a gzip bomb costs at most
the limit); an unsupported content type or encoding (``schema_violation``, 415); invalid base64 or
gzip (``invalid_encoding``, 400); an empty or blank body (``invalid_json``, 400: a request must hold
a reading); and every reading the IoT parser refuses, with the parser's reason. At most
``max_dead_letters`` (``CoreSettings``, default 100) per request one by one; the rest are counted by
reason in one ``too_many_errors`` letter with the body's digest and a sample, and ``rejected`` in the
response still counts every one.

Web logs (``read_log_stream`` for files, ``log_lines_to_envelopes`` for lines with ids)
In: a binary stream (plain or gzip) and its origin (``s3://bucket/key``), or log messages with ids.
Out: batches of envelopes whose event ids are origin + line number (or log event id), so reading the
same object again yields the same ids. Memory stays bounded: one line of at most ``max_line_bytes``
and one batch are held at a time, whatever the file size. Blank lines are skipped and counted.
Dead letters (stage ``edge.logs``, ids from origin + position, so two equal bad lines are two
letters): each line the log parser refuses (its reason), an over-long line (``too_large``, keeping
its first bytes), a compressed stream that breaks off (``invalid_encoding``; the lines before the
break are kept). At most ``max_dead_letters`` per file (``read_log_stream``) or per set of calls
sharing a ``log_dead_letters`` cap (a CloudWatch Logs event) one by one, the rest summarized in one
``too_many_errors`` letter in the last batch.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from sluice.core.contracts import (
    DEFAULT_HORIZON,
    DeadLetter,
    Envelope,
    ErrorType,
    Source,
    Stage,
    TimeHorizon,
    WebAccessLog,
)
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    BatchResult,
    CappedDeadLetters,
    Rejection,
    dead_letter,
    is_blank,
)
from sluice.core.errors import RecordRejected, SluiceError
from sluice.core.inputs import encode_json, gunzip_bounded
from sluice.parsing.iot import NO_SENTINELS, Sentinels, parse_iot_record
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
    suppressed: dict[ErrorType, int] = field(default_factory=dict)
    """Rejections over the cap, by reason (summarized in one ``too_many_errors`` letter)."""
    skipped: int = 0
    """Blank NDJSON lines."""
    missing_metrics: int = 0
    """Values equal to a configured sentinel, left out of their readings (not dead letters)."""

    @property
    def rejected(self) -> int:
        """Rejected readings, every one: those dead-lettered one by one and those summarized."""
        summaries = sum(1 for d in self.dead_letters if d.error_type is ErrorType.TOO_MANY_ERRORS)
        return len(self.dead_letters) - summaries + sum(self.suppressed.values())

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


def _lines(body: bytes) -> Iterator[bytes]:
    """The lines of ``body`` (``\r\n`` or ``\n``), one at a time: no list of a million lines."""
    start, end = 0, len(body)
    while start < end:
        stop = body.find(b"\n", start)
        if stop < 0:
            stop = end
        line = body[start:stop]
        yield line[:-1] if line.endswith(b"\r") else line
        start = stop + 1


class NdjsonRecords:
    """(where, raw) of each NDJSON line (``line N``, 1-based; a blank line's raw is ``None``), one at a
    time; ``rest()`` hands over the lines not read yet, for ``_count_the_rest``."""

    __slots__ = ("_body", "_number", "_start")

    def __init__(self, body: bytes) -> None:
        self._body, self._start, self._number = body, 0, 0

    def __iter__(self) -> NdjsonRecords:
        return self

    def __next__(self) -> tuple[str, bytes | None]:
        body, start = self._body, self._start
        if start >= len(body):
            raise StopIteration
        stop = body.find(b"\n", start)
        if stop < 0:
            stop = len(body)
        line = body[start:stop]
        self._start, self._number = stop + 1, self._number + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        return f"line {self._number}", None if is_blank(line) else line

    def rest(self) -> bytes:
        """What is left of the body (whole lines), and nothing more to iterate."""
        rest, self._start = self._body[self._start :], len(self._body)
        return rest


_MAY_HOLD_A_READING = frozenset(b"{[ \t\r\x0b\x0c")
"""First bytes of a line that may hold a reading (an object, an array, leading white space)."""
_REST_PIECE_BYTES = 1 << 20


def _count_the_rest(
    rest: bytes,
    letters: CappedDeadLetters,
    context: dict[str, Any],
    now: datetime,
    sentinels: Sentinels,
    missing: list[int],
) -> tuple[list[Envelope], int]:
    """The readings of the remaining NDJSON lines once ``letters`` is saturated, and the blank lines.

    A line that cannot hold a reading (its first byte is not ``{``, ``[`` or white space: a number,
    a string, a literal, junk) is rejected exactly as the parser would reject it, but each distinct
    such line is parsed once per 1 MiB piece and its copies are counted at once (``Counter`` over the
    piece's lines), so a body of a million ``1`` lines costs a split and a count, not a million
    parses. Every other line goes through the parser in order, as before.
    """
    envelopes: list[Envelope] = []
    skipped, start = 0, 0
    if rest.endswith(b"\n"):  # a final newline ends the last line; it starts none
        rest = rest[:-1]
    while start < len(rest):
        stop = rest.find(b"\n", min(start + _REST_PIECE_BYTES, len(rest)))
        stop = len(rest) if stop < 0 else stop
        lines = rest[start:stop].split(b"\n")
        start = stop + 1
        may = [line for line in lines if line and line[0] in _MAY_HOLD_A_READING]
        copies = Counter(lines)
        for line in may:
            copies[line] -= 1
            record = line[:-1] if line.endswith(b"\r") else line
            if is_blank(record):
                skipped += 1
                continue
            for outcome in parse_iot_record(record, context, sentinels, missing):
                if isinstance(outcome, Rejection):
                    letters.count(outcome.error_type, outcome.raw)
                else:
                    envelopes.append(wrap_reading(outcome, now))
        for line, times in copies.items():
            record = line[:-1] if line.endswith(b"\r") else line
            if times <= 0:
                continue
            if is_blank(record):
                skipped += times
                continue
            (rejection,) = parse_iot_record(record, context)  # one: it is no array
            assert isinstance(rejection, Rejection)
            letters.count(rejection.error_type, rejection.raw, times)
    return envelopes, skipped


def _is_ndjson(body: bytes) -> bool:
    """Several non-blank lines, one of them at least JSON."""
    lines = json_lines = 0
    for line in _lines(body):
        if is_blank(line):
            continue
        lines += 1
        if not json_lines and _is_json(line):
            json_lines = 1
        if lines > 1 and json_lines:
            return True
    return False


def split_records(body: bytes) -> Iterator[tuple[str, bytes | Rejection | None]]:
    """(where, raw record) pairs: ``body`` for one JSON value, ``index N`` per array element (0-based),
    ``line N`` per NDJSON line (1-based; a blank line's raw is ``None``: skipped, to be counted;
    an ``NdjsonRecords``). An array element that cannot be re-encoded (nested deeper than orjson
    writes) is its rejection.

    A body that is not one JSON value is NDJSON, unless none of its lines is JSON either: then it is
    one broken document and stays one record (one dead letter rather than one per fragment).
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        if not _is_ndjson(body):
            return iter([("body", body)])
        return NdjsonRecords(body)
    return _json_records(body, decoded)


def _json_records(body: bytes, decoded: Any) -> Iterator[tuple[str, bytes | Rejection | None]]:
    if not isinstance(decoded, list):
        yield "body", body
        return
    # Each element gets its own size limit and its own dead letter; the parser flattens nesting.
    for index, item in enumerate(decoded):
        try:
            yield f"index {index}", encode_json(item)
        except RecordRejected as rejected:
            yield f"index {index}", Rejection(rejected.error_type, rejected.message, body)


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
    horizon: TimeHorizon = DEFAULT_HORIZON,
    max_dead_letters: int = MAX_DEAD_LETTERS,
    sentinels: Sentinels = NO_SENTINELS,
) -> IotIngestOutcome:
    """Turn one HTTP request into envelopes and a response. Never raises for bad input.

    ``horizon`` bounds event times around ``now`` (the request's time); ``max_dead_letters`` caps
    the dead letters of the request built one by one; values equal to one of ``sentinels`` become
    missing metrics (counted in ``missing_metrics``). Their defaults are ``CoreSettings``' own.
    """
    missing = [0]
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
    errors: list[dict[str, str]] = []
    skipped = 0
    context = horizon.context(now)
    letters = CappedDeadLetters(
        Source.IOT, IOT_STAGE, max_dead_letters, first_seen=now, digest_suppressed=False
    )
    # Two equal bad records of one body are two rejections: their ids include where they were in
    # the body (and the body itself, so a client retry of the same body gets the same ids).
    body_digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    records = split_records(body)
    for where, raw in records:
        if raw is None:
            skipped += 1
            continue
        if letters.saturated and isinstance(records, NdjsonRecords) and isinstance(raw, bytes):
            # Past the cap only counts change: the rest of the lines in bulk (``_count_the_rest``).
            rest = (raw + b"\n" + records.rest()) if raw else records.rest()
            more, blank = _count_the_rest(rest, letters, context, now, sentinels, missing)
            envelopes.extend(more)
            skipped += blank
            break
        outcomes = (
            (raw,)
            if isinstance(raw, Rejection)
            else parse_iot_record(raw, context, sentinels, missing)
        )
        index = 0
        for outcome in outcomes:
            if not isinstance(outcome, Rejection):
                envelopes.append(wrap_reading(outcome, now))
                continue
            kept = letters.add(outcome, identity=(body_digest, where, index))
            index += 1
            if kept is not None and len(errors) < limits.max_errors_reported:
                errors.append(_error_entry(where, kept))
    accepted = len(envelopes)
    letters_out: BatchResult[Envelope] = BatchResult()
    letters.finish(letters_out, scope="request", body_digest=body_digest, body_size=len(body))
    if letters_out.suppressed and len(errors) < limits.max_errors_reported:
        errors.append(_error_entry("body", letters_out.dead_letters[-1]))
    if not accepted and not letters_out.dead_letters:  # ``[]``: valid JSON, no reading
        letter = dead_letter(
            Source.IOT, IOT_STAGE, ErrorType.SCHEMA_VIOLATION, "the body holds no readings", body,
            first_seen=now,
        )  # fmt: skip
        letters_out.dead_letters.append(letter)
        errors = [_error_entry("body", letter)][: limits.max_errors_reported]
    envelopes.extend(wrap_dead_letter(letter, now) for letter in letters_out.dead_letters)
    return IotIngestOutcome(
        202 if accepted else 400, envelopes, accepted, letters_out.dead_letters, errors,
        letters_out.suppressed, skipped, missing[0],
    )  # fmt: skip


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
    stream: IO[bytes] | _Prepended, max_line_bytes: int = MAX_LINE_BYTES, start: int = 0
) -> Iterator[LogLine]:
    """Numbered lines (1-based, line endings removed); never reads more than one bounded line ahead.

    A line longer than ``max_line_bytes`` is read past in chunks and yielded cut to
    ``max_line_bytes + 1`` bytes with its real ``size``, so one newline-free gigabyte costs no memory.
    ``start``: the number of lines before the first one read.
    """
    number = start
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
    horizon: TimeHorizon = DEFAULT_HORIZON,
    max_dead_letters: int = MAX_DEAD_LETTERS,
    letters: CappedDeadLetters | None = None,
    last: bool = True,
) -> BatchResult[Envelope]:
    """Parse lines into envelopes with ids from ``origin`` + position; blank lines are skipped and
    counted. Never raises for bad input.

    ``horizon`` bounds event times around ``now``; at most ``max_dead_letters`` dead letters are
    built one by one per call, the rest summarized in one ``too_many_errors`` letter. Their defaults
    are ``CoreSettings``' own. For a cap over several calls (the batches of one file or one
    CloudWatch Logs event), pass the same ``letters`` (``log_dead_letters``) to each, with
    ``last=False`` but for the last call, which gets the summary.
    """
    now = now or datetime.now(UTC)
    result: BatchResult[Envelope] = BatchResult()
    if letters is None:
        letters = log_dead_letters(stage, max_dead_letters, now)
    context = horizon.context(now)
    lines = lines if isinstance(lines, list) else list(lines)
    # The batch's lines go through the parser's bulk path at once (the same outcomes as one by
    # one); once the cap is saturated, line by line, so that known junk is not parsed again.
    parsed: list[WebAccessLog | Rejection | None] | None = None
    if not letters.saturated:
        fitting = [i for i, line in enumerate(lines) if line.size <= max_line_bytes]
        parsed = [None] * len(lines)
        for i, outcome in zip(
            fitting, parser.parse_many([lines[i].data for i in fitting], context), strict=True
        ):
            parsed[i] = outcome
    parse = parser.parse_raw
    # Past the cap a rejected line only adds to the counts: a short line rejected before is
    # counted again without parsing it again (a file of one junk line repeated costs a lookup).
    known: dict[bytes | str, Rejection] = {}
    for index, line in enumerate(lines):
        data = line.data
        if letters.saturated and data in known:
            rejection = known[data]
            letters.count(rejection.error_type, rejection.raw)
            continue
        if line.size > max_line_bytes:
            # Only a sample of the line was read; the letter still tells its real size.
            message = f"{origin} line {line.position}: {line.size} bytes > {max_line_bytes}"
            letters.add(
                Rejection(ErrorType.TOO_LARGE, message, line.data),
                identity=(origin, line.position),
                size=line.size,
            )
            continue
        outcome = parse(data, context) if parsed is None else parsed[index]
        if outcome is None:
            result.skipped += 1
        elif isinstance(outcome, Rejection):
            if letters.saturated and len(data) <= _KNOWN_LINE_BYTES and len(known) < _KNOWN_LINES:
                known[data] = outcome
            letters.add(outcome, identity=(origin, line.position))
        else:
            result.valid.append(wrap_access_log(outcome, origin, line.position, now))
    if last:
        letters.finish(result, scope=str(origin))
    else:
        letters.drain(result)
    return result


_KNOWN_LINES, _KNOWN_LINE_BYTES = 1024, 256
"""At most this many rejected lines of at most this many bytes are remembered per batch."""


def log_dead_letters(
    stage: Stage = LOG_STAGE, max_dead_letters: int = MAX_DEAD_LETTERS, now: datetime | None = None
) -> CappedDeadLetters:
    """The capped dead letters of one log file or CloudWatch Logs event (``log_lines_to_envelopes``)."""
    return CappedDeadLetters(Source.WEBLOG, stage, max_dead_letters, first_seen=now)


_BULK_PIECE_BYTES = 1 << 20
"""Past the cap, the rest of a log file is read in pieces of about this many bytes (whole lines)."""


class _Prepended:
    """``head`` (bytes already read from ``stream``) and then ``stream``, for ``readline`` only;
    ``exhausted`` once every byte of ``head`` was handed out."""

    __slots__ = ("_head", "_left", "_stream")

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head, self._left, self._stream = io.BytesIO(head), len(head), stream

    @property
    def exhausted(self) -> bool:
        return not self._left

    def readline(self, limit: int) -> bytes:
        if not self._left:
            return self._stream.readline(limit)
        line = self._head.readline(limit)
        self._left -= len(line)
        if self._left or line.endswith(b"\n") or len(line) >= limit:
            return line
        return line + self._stream.readline(limit - len(line))


def _count_rejected_piece(
    parser: LogParser,
    piece: bytes,
    max_line_bytes: int,
    context: dict[str, Any],
    letters: CappedDeadLetters,
) -> tuple[int, int] | None:
    """Count a piece of whole lines in bulk when none of them is a record: ``(lines, blank)``;
    ``None`` (nothing counted) when a line is a record, too long, ends in ``\\r``, keeps a raw
    input other than itself, or the piece has more than ``_KNOWN_LINES`` distinct lines. Each
    distinct line is parsed once, so a file of one junk line repeated costs a split and a count.
    """
    lines = piece.split(b"\n")
    if lines and not lines[-1]:  # the final newline ends the last line; it starts none
        lines.pop()
    copies = Counter(lines)
    if len(copies) > _KNOWN_LINES:
        return None
    counts: dict[ErrorType, int] = {}
    blank_lines: set[bytes] = set()
    for line, times in copies.items():
        if len(line) > max_line_bytes or line.endswith(b"\r"):
            return None
        outcome = parser.parse_raw(line, context)
        if outcome is None:
            blank_lines.add(line)
            continue
        if not isinstance(outcome, Rejection) or outcome.raw != line:
            return None
        counts[outcome.error_type] = counts.get(outcome.error_type, 0) + times
    if counts:
        if not blank_lines:
            records = piece if piece.endswith(b"\n") else piece + b"\n"
        else:
            records = b"".join(line + b"\n" for line in lines if line not in blank_lines)
        letters.count_records(counts, records)
    return len(lines), sum(copies[line] for line in blank_lines)


def read_log_stream(
    stream: IO[bytes],
    origin: str,
    parser: LogParser,
    *,
    batch_lines: int = 5000,
    max_line_bytes: int = MAX_LINE_BYTES,
    stage: Stage = LOG_STAGE,
    now: datetime | None = None,
    horizon: TimeHorizon = DEFAULT_HORIZON,
    max_dead_letters: int = MAX_DEAD_LETTERS,
) -> Iterator[BatchResult[Envelope]]:
    """Batches of envelopes and dead letters for a log file, read as it streams
    (``log_lines_to_envelopes`` per batch of ``batch_lines`` lines). The dead-letter cap spans the
    file: at most ``max_dead_letters`` built one by one, and the ``too_many_errors`` summary of the
    rest in the last batch (a batch without lines when the file ended on a batch boundary).

    A compressed stream that breaks off (truncated or corrupt gzip) ends the file with an
    ``invalid_encoding`` dead letter; the lines read before the break are kept.
    """
    if batch_lines < 1:
        raise ValueError("batch_lines must be >= 1")
    now = now or datetime.now(UTC)
    letters = log_dead_letters(stage, max_dead_letters, now)

    def envelopes(lines: list[LogLine], final: bool) -> BatchResult[Envelope]:
        return log_lines_to_envelopes(
            parser, lines, origin, max_line_bytes=max_line_bytes, stage=stage, now=now,
            horizon=horizon, max_dead_letters=max_dead_letters, letters=letters, last=final,
        )  # fmt: skip

    context = horizon.context(now)
    batch: list[LogLine] = []
    last = 0
    held: BatchResult[Envelope] = BatchResult()  # what the bulk part has not yielded yet

    def in_bulk() -> Iterator[BatchResult[Envelope]]:
        """The rest of the file once the cap is saturated: pieces of junk lines only change counts,
        so they are counted in bulk (``_count_rejected_piece``); any other piece goes line by line."""
        nonlocal held, last
        while piece := stream.read(_BULK_PIECE_BYTES):
            if not piece.endswith(b"\n"):
                piece += stream.readline(max_line_bytes + 1)
            counted = _count_rejected_piece(parser, piece, max_line_bytes, context, letters)
            if counted is not None:
                last += counted[0]
                held.skipped += counted[1]
                continue
            rest = _Prepended(piece, stream)
            lines: list[LogLine] = []
            for line in iter_bounded_lines(rest, max_line_bytes, start=last):
                lines.append(line)
                if rest.exhausted:
                    break
            last += len(lines)
            result, held = held, BatchResult()
            result.extend(envelopes(lines, False))
            yield result

    try:
        for line in iter_bounded_lines(stream, max_line_bytes):
            if len(batch) >= batch_lines:
                yield envelopes(batch, False)
                batch = []
                if letters.saturated:  # the rest in bulk; ``line`` (read already) goes first
                    last = int(line.position)
                    held.extend(envelopes([line], False))
                    yield from in_bulk()
                    break
            batch.append(line)
            last = int(line.position)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        # Only decompression errors: a network error reading the object is not bad input and
        # must fail the invocation so that it is retried.
        result, held = held, BatchResult()
        result.extend(envelopes(batch, True))
        result.dead_letters.append(
            dead_letter(
                Source.WEBLOG, stage, ErrorType.INVALID_ENCODING,
                f"{origin}: compressed data broken after line {last}: {err}",
                f"{origin} after line {last}", first_seen=now,
            )
        )  # fmt: skip
        yield result
        return
    if batch or letters.suppressed or held.valid or held.dead_letters or held.skipped:
        result = held
        result.extend(envelopes(batch, True))
        yield result


@dataclass(slots=True)
class IngestCounts:
    """The counters every stage reports: received, emitted, dead-lettered by reason, skipped.

    ``received`` = ``emitted`` + rejected + ``skipped``. ``dead_lettered`` counts rejected inputs by
    reason, those summarized over the cap included, plus under ``too_many_errors`` the summaries.
    """

    received: int = 0
    emitted: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    """Blank lines or records: skipped, neither emitted nor dead-lettered."""

    def add(
        self,
        emitted: int,
        letters: Iterable[DeadLetter],
        *,
        suppressed: Mapping[ErrorType, int] | None = None,
        skipped: int = 0,
    ) -> None:
        rejected = 0
        for letter in letters:
            reason = letter.error_type.value
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1
            if letter.error_type is not ErrorType.TOO_MANY_ERRORS:
                rejected += 1
        for error_type, count in (suppressed or {}).items():
            reason = error_type.value
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + count
            rejected += count
        self.emitted += emitted
        self.skipped += skipped
        self.received += emitted + rejected + skipped

    @property
    def rejected(self) -> int:
        return sum(n for r, n in self.dead_lettered.items() if r != ErrorType.TOO_MANY_ERRORS.value)
