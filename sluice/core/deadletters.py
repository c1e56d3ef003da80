"""Dead letters: how every stage turns a rejected input into data instead of losing it.

In: the raw input (bytes or text), where it failed and why.
Out: a ``DeadLetter`` with the raw payload bounded in size (base64 when it is not UTF-8 text) and a
deterministic id, so the same rejection seen twice (a retry, a replay) is one dead letter, not two.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from pydantic import ValidationError

from sluice import __version__
from sluice.core.contracts import DeadLetter, ErrorType, Source, Stage, make_event_id

__all__ = [
    "MAX_RAW_BYTES",
    "BatchResult",
    "count_by_reason",
    "dead_letter",
    "describe_validation_error",
    "raw_bytes",
]

MAX_RAW_BYTES = 64 * 1024
"""Bytes of the original input kept in a dead letter; the rest is cut and ``raw_truncated`` set."""

MAX_MESSAGE_CHARS = 2000

T = TypeVar("T")


@dataclass(slots=True)
class BatchResult(Generic[T]):
    """What a fallible stage returns for a batch: the good records and the dead letters."""

    valid: list[T] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def extend(self, other: BatchResult[T]) -> None:
        self.valid.extend(other.valid)
        self.dead_letters.extend(other.dead_letters)


def _bounded_raw(raw: bytes | str) -> tuple[str, Literal["utf-8", "base64"], int, bool]:
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    size = len(data)
    cut = data[:MAX_RAW_BYTES]
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        text = cut.decode("utf-8")
    except UnicodeDecodeError as err:
        # A cut through a multi-byte character is still text; anything else is binary.
        if size > MAX_RAW_BYTES and err.start >= len(cut) - 3:
            text = cut[: err.start].decode("utf-8", "replace")
        else:
            text = base64.b64encode(cut).decode("ascii")
            encoding = "base64"
    return text, encoding, size, size > MAX_RAW_BYTES


def dead_letter(
    source: Source,
    stage: Stage,
    error_type: ErrorType,
    message: str,
    raw: bytes | str,
    *,
    event_time: datetime | None = None,
    first_seen: datetime | None = None,
    identity: tuple[object, ...] | None = None,
) -> DeadLetter:
    """Build a dead letter with a deterministic id.

    The id depends on source, stage and error type, and on ``identity`` when given (where the input
    was: a file and line number, a Kinesis position), else on the raw input. Give an identity when
    two equal inputs are two events (two identical bad log lines), so both are kept.
    """
    text, encoding, size, truncated = _bounded_raw(raw)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return DeadLetter(
        dead_letter_id=make_event_id(
            source, stage, error_type.value, *(identity or (encoding, size, text))
        ),
        source=source,
        stage=stage,
        error_type=error_type,
        message=message,
        raw=text,
        raw_encoding=encoding,
        raw_size=size,
        raw_truncated=truncated,
        event_time=event_time,
        first_seen=first_seen or datetime.now(UTC),
        pipeline_version=__version__,
    )


def describe_validation_error(err: ValidationError) -> tuple[ErrorType, str]:
    """The error type and a one-line message for a contract's refusal (the first error, and a count)."""
    first = err.errors(include_url=False)[0]
    loc = first["loc"]
    if first["type"] == "missing":
        error_type = ErrorType.MISSING_FIELD
    elif loc and loc[0] == "event_time":
        error_type = ErrorType.INVALID_TIMESTAMP
    else:
        error_type = ErrorType.SCHEMA_VIOLATION
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return error_type, f"{'.'.join(str(p) for p in loc)}: {first['msg']}{more}"


def raw_bytes(letter: DeadLetter) -> bytes:
    """The kept (possibly truncated) original input, decoded back to bytes, for re-driving."""
    if letter.raw_encoding == "base64":
        return base64.b64decode(letter.raw)
    return letter.raw.encode("utf-8")


def count_by_reason(letters: Iterable[DeadLetter]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.error_type.value] = counts.get(letter.error_type.value, 0) + 1
    return counts
