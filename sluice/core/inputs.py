"""Reading raw input: files or standard input, plain or gzip, as batches of lines; bounded gunzip;
JSON decoding with typed rejections. The one home of these helpers for every layer.

In: a path (``-`` for standard input), a binary stream, gzip bytes, or one raw JSON record.
Out: batches of raw lines (bytes, newline removed), so large inputs are streamed, never loaded whole;
decompressed bytes within a bound; decoded JSON values.
Dead letters: none here; ``decode_json`` raises ``RecordRejected`` (too large, not UTF-8, not JSON)
for the caller to turn into a dead letter.
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from sluice.core.contracts import ErrorType
from sluice.core.errors import ConfigError, RecordRejected

__all__ = [
    "MAX_RECORD_BYTES",
    "decode_json",
    "encode_json",
    "gunzip_bounded",
    "iter_line_batches",
    "maybe_gunzip",
    "open_input",
]

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_BATCH = 10_000
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


def iter_line_batches(stream: IO[bytes], batch_size: int = DEFAULT_BATCH) -> Iterator[list[bytes]]:
    """Yield lists of at most ``batch_size`` lines (without line endings), reading incrementally."""
    batch: list[bytes] = []
    for line in stream:
        batch.append(line.rstrip(b"\r\n"))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


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
