"""Reading raw input: files or standard input, plain or gzip, as batches of lines; whole documents
within a bound; bounded gunzip; JSON decoding with typed rejections. The one home of these helpers
for every layer.

In: a path (``-`` for standard input), a binary stream, gzip bytes, or one raw JSON record.
Out: ``LineBatch`` values (raw lines without line endings, blank lines dropped, over-long lines cut
to a bounded head with their real size), so large inputs are streamed, never loaded whole; a whole
document, or its head and size when it is over a bound; decompressed bytes within a bound; decoded
JSON values; the elements of a JSON array document as their raw text.
Dead letters: none here; ``decode_json`` raises ``RecordRejected`` (too large, not UTF-8, not JSON)
and the readers report over-long lines and documents, for the caller to turn into dead letters.
Why: every read is bounded while it happens. A line is never held beyond its limit (a newline-free
gigabyte costs one read chunk plus the limit), a batch never beyond ``DEFAULT_BATCH`` lines and about
``DEFAULT_BATCH_BYTES`` bytes, a document never beyond its limit.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from sluice.core.contracts import ErrorType
from sluice.core.errors import ConfigError, RecordRejected

__all__ = [
    "MAX_RECORD_BYTES",
    "BoundedRead",
    "LineBatch",
    "OversizedLine",
    "decode_json",
    "encode_json",
    "gunzip_bounded",
    "iter_line_batches",
    "json_array_elements",
    "maybe_gunzip",
    "open_input",
    "read_bounded",
]

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_BATCH = 10_000
"""Most lines in one ``LineBatch``."""
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
"""A ``LineBatch`` is handed on once it holds this many bytes of lines (at most one read chunk more)."""
READ_CHUNK_BYTES = 1024 * 1024
MAX_RECORD_BYTES = 256 * 1024
"""Largest single JSON record ``decode_json`` accepts by default."""


def maybe_gunzip(stream: IO[bytes]) -> IO[bytes]:
    """Wrap ``stream`` in a gzip reader when it starts with the gzip magic bytes."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


def open_input(path: str | Path) -> IO[bytes]:
    """Open a file or ``-`` (standard input) for binary reading; gzip is detected by content."""
    if str(path) == "-":
        return maybe_gunzip(sys.stdin.buffer)
    try:
        return maybe_gunzip(open(path, "rb"))  # the caller closes it
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None


@dataclass(frozen=True, slots=True)
class OversizedLine:
    """A line longer than the limit: its number (1-based), its first bytes and its real size."""

    number: int
    head: bytes
    size: int


@dataclass(slots=True)
class LineBatch:
    """Lines read in one step: those within the limit, and the over-long ones, cut."""

    lines: list[bytes] = field(default_factory=list)
    oversized: list[OversizedLine] = field(default_factory=list)
    blank: int = 0
    """Blank lines (whitespace only) read and dropped since the previous batch."""


def iter_line_batches(
    stream: IO[bytes],
    max_line_bytes: int,
    *,
    batch_lines: int = DEFAULT_BATCH,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    head: bytes = b"",
) -> Iterator[LineBatch]:
    """Batches of the lines of ``stream`` (``head``: bytes already read from it), read incrementally.

    Line endings (``\\n``, ``\\r\\n``) are removed and blank lines (whitespace only) dropped and
    counted (``LineBatch.blank``; a batch may hold nothing else). A line
    longer than ``max_line_bytes`` is read past, never held: it comes as an ``OversizedLine`` with its
    first ``max_line_bytes`` bytes and its real size, and the lines after it are read as usual.
    A batch holds at most ``batch_lines`` lines, and is handed on once it holds ``batch_bytes``.
    """
    if max_line_bytes < 1 or batch_lines < 1:
        raise ValueError("max_line_bytes and batch_lines must be >= 1")
    read = getattr(stream, "read1", stream.read)  # what is there now, not a full chunk (pipes)
    batch = LineBatch()
    held = 0  # bytes of lines in the batch
    number = 0  # lines completed so far, blank ones included
    counted = 0  # ``number`` when the previous batch was handed on
    partial = bytearray()  # the start of the current line, at most max_line_bytes of it
    partial_size = 0  # its real size so far (more than len(partial) once it is over the limit)
    partial_cr = False  # whether what was read of it ends with "\r"
    partial_blank = True  # whether all of it is whitespace

    def end_line(rest: bytes) -> None:
        nonlocal number, held, partial_size, partial_blank
        number += 1
        size = partial_size + len(rest)
        if rest.endswith(b"\r") if rest else partial_cr:
            size -= 1  # the "\r" of a "\r\n" ending is not part of the line
        if partial_blank and (not rest or rest.isspace()):
            pass  # blank, however long
        elif size > max_line_bytes:
            cut = bytes(partial + rest[: max(0, max_line_bytes - len(partial))])
            batch.oversized.append(OversizedLine(number, cut, size))
            held += len(cut)
        else:  # never cut: ``partial`` is the whole start of the line
            batch.lines.append(bytes(partial + rest)[:size])
            held += size
        partial.clear()
        partial_size, partial_blank = 0, True

    for chunk in _chunks(head, read):
        start = 0
        if partial_size:  # a line begun in an earlier chunk
            newline = chunk.find(b"\n")
            if newline < 0:
                partial += chunk[: max(0, max_line_bytes - len(partial))]
                partial_size += len(chunk)
                partial_cr = chunk.endswith(b"\r")
                partial_blank = partial_blank and chunk.isspace()
                continue
            end_line(chunk[:newline])
            start = newline + 1
        last = chunk.rfind(b"\n", start)
        if last >= 0:
            body = chunk[start:last]
            if body and not body.isspace():  # a run of blank lines is skipped whole
                held += _split_lines(body, number, max_line_bytes, batch)
            number += body.count(b"\n") + 1
            start = last + 1
        if start < len(chunk):
            tail = chunk[start:]
            partial += tail[:max_line_bytes]
            partial_size, partial_cr = len(tail), tail.endswith(b"\r")
            partial_blank = tail.isspace()
        if len(batch.lines) >= batch_lines or held >= batch_bytes:
            batch.blank = number - counted - len(batch.lines) - len(batch.oversized)
            counted = number
            yield from _handed_on(batch, batch_lines)
            batch, held = LineBatch(), 0
    if partial_size:
        end_line(b"")
    batch.blank = number - counted - len(batch.lines) - len(batch.oversized)
    if batch.lines or batch.oversized or batch.blank:
        yield from _handed_on(batch, batch_lines)


def _chunks(head: bytes, read: Callable[[int], bytes]) -> Iterator[bytes]:
    for start in range(0, len(head), READ_CHUNK_BYTES):
        yield head[start : start + READ_CHUNK_BYTES]
    while chunk := read(READ_CHUNK_BYTES):
        yield chunk


def _split_lines(body: bytes, before: int, max_line_bytes: int, batch: LineBatch) -> int:
    """The complete lines of ``body`` (no final newline) into ``batch``, numbered after ``before``;
    returns the bytes added."""
    lines, oversized = batch.lines, batch.oversized
    added = 0
    for number, raw in enumerate(body.split(b"\n"), start=before + 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line or line.isspace():
            continue
        if len(line) > max_line_bytes:
            oversized.append(OversizedLine(number, line[:max_line_bytes], len(line)))
            added += max_line_bytes
        else:
            lines.append(line)
            added += len(line)
    return added


def _handed_on(batch: LineBatch, batch_lines: int) -> Iterator[LineBatch]:
    if len(batch.lines) <= batch_lines:
        yield batch
        return
    for start in range(0, len(batch.lines), batch_lines):
        piece = batch.lines[start : start + batch_lines]
        yield LineBatch(piece, *((batch.oversized, batch.blank) if start == 0 else ([], 0)))


@dataclass(frozen=True, slots=True)
class BoundedRead:
    """A whole stream read within a bound: ``data`` is all of it unless ``size`` is larger, then
    ``data`` is its first ``limit`` bytes."""

    data: bytes
    size: int

    @property
    def complete(self) -> bool:
        return self.size == len(self.data)


def read_bounded(stream: IO[bytes], limit: int, *, head: bytes = b"") -> BoundedRead:
    """Read ``stream`` to its end, keeping at most ``limit`` bytes (``head``: bytes already read).

    Past the limit the rest is only counted, one chunk at a time, so a document of any size costs
    ``limit`` bytes of memory and its real size is known.
    """
    data = head if len(head) > limit else head + stream.read(limit + 1 - len(head))
    if len(data) <= limit:
        return BoundedRead(data, len(data))
    size = len(data)
    while chunk := stream.read(READ_CHUNK_BYTES):
        size += len(chunk)
    return BoundedRead(data[:limit], size)


_WHITESPACE = " \t\n\r"


def json_array_elements(text: str) -> Iterator[str] | None:
    """The elements of a JSON array document as their raw text, or ``None`` when ``text`` is not
    exactly one JSON array.

    The document is checked whole first (so ``None`` comes before any element), decoding one element
    at a time: memory is the text plus one element, never the decoded document.
    """
    bounds = _array_bounds(text)
    if bounds is None:
        return None
    return (text[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2))


def _array_bounds(text: str) -> array[int] | None:
    decoder = json.JSONDecoder()
    bounds: array[int] = array("q")
    at = _skip_space(text, 0)
    if not text.startswith("[", at):
        return None
    at = _skip_space(text, at + 1)
    if text.startswith("]", at):
        return bounds if _skip_space(text, at + 1) == len(text) else None
    while True:
        try:
            _, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            return None
        bounds.extend((at, end))
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at = _skip_space(text, at + 1)
        elif text.startswith("]", at):
            return bounds if _skip_space(text, at + 1) == len(text) else None
        else:
            return None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WHITESPACE:
        at += 1
    return at


def gunzip_bounded(data: bytes, max_bytes: int, *, truncate: bool = False) -> bytes:
    """Decompress gzip (several members allowed), refusing output beyond ``max_bytes``.

    Decompression is streamed in bounded steps, so a small body that inflates to gigabytes costs
    ``max_bytes`` of memory before it is refused. Raises ``ValueError`` for invalid or truncated
    data and ``OverflowError`` when the output would exceed ``max_bytes``; with ``truncate``, such
    output is cut to its first ``max_bytes`` bytes instead (for a caller whose own size check
    downstream refuses it, keeping its beginning as evidence).
    """
    out = bytearray()
    pending = data
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    while True:
        try:
            # max_length is never 0 here (0 would mean "unbounded"): out never exceeds max_bytes.
            chunk = decompressor.decompress(pending, max_bytes + 1 - len(out))
        except zlib.error as err:
            raise ValueError(f"invalid gzip data: {err}") from None
        out += chunk
        if len(out) > max_bytes:
            if truncate:
                del out[max_bytes:]
                return bytes(out)
            raise OverflowError(f"decompressed body exceeds {max_bytes} bytes")
        if decompressor.eof:
            rest = decompressor.unused_data
            if not rest:
                return bytes(out)
            if not rest.startswith(GZIP_MAGIC):
                raise ValueError("invalid gzip data: trailing bytes after the last member")
            decompressor, pending = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), rest
            continue
        pending = decompressor.unconsumed_tail
        if not pending and not chunk:
            raise ValueError("invalid gzip data: truncated")


def decode_json(raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """orjson decode with typed rejections (too large, not UTF-8, not JSON)."""
    if len(raw) > max_bytes:
        raise RecordRejected(ErrorType.TOO_LARGE, f"record of {len(raw)} bytes > {max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        kind = ErrorType.INVALID_ENCODING if "UTF-8" in str(err) else ErrorType.INVALID_JSON
        raise RecordRejected(kind, str(err)) from None


ORJSON_MAX_WRITE_DEPTH = 254
"""orjson reads 1024 levels of nesting but writes at most this many."""


def encode_json(value: Any) -> bytes:
    """orjson encode of a decoded value (to keep it in a dead letter or as a JSON attribute);
    raises ``RecordRejected(schema_violation)`` for what orjson cannot write: nesting deeper than
    ``ORJSON_MAX_WRITE_DEPTH`` (a 1.8 KB body can be), integers beyond 64 bits, non-JSON types."""
    try:
        return orjson.dumps(value)
    except TypeError as err:
        reason = (
            f"nested deeper than {ORJSON_MAX_WRITE_DEPTH} levels"
            if "Recursion limit" in str(err)
            else str(err)
        )
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION, f"not encodable as JSON: {reason}"
        ) from None
