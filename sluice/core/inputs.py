"""Reading raw input: files or standard input, plain or gzip, as batches of lines.

In: a path (``-`` for standard input) or a binary stream.
Out: batches of raw lines (bytes, newline removed), so large inputs are streamed, never loaded whole.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sluice.core.errors import ConfigError

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_BATCH = 10_000


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
