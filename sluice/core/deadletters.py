"""Dead letters: how every stage turns a rejected input into data instead of losing it.

In: the raw input (bytes or text), where it failed and why.
Out: a ``DeadLetter`` with the raw payload bounded in size (base64 when it is not UTF-8 text) and a
deterministic id, so the same rejection seen twice (a retry, a replay) is one dead letter, not two.

Accounting: every input of a fallible stage is a valid record, a rejection, or a skipped blank record
(``is_blank``: empty or only ASCII whitespace), so valid + rejected + skipped = inputs
(``BatchResult``). Rejections are capped per request or batch (``CappedDeadLetters``): the first
``MAX_DEAD_LETTERS`` become dead letters one by one, the rest are counted by reason and summarized in
one ``too_many_errors`` dead letter carrying a digest, the counts and a sample of the first of them.
Why: one hostile 1 MiB body of ``1\n`` lines was 524,288 dead letters (281 MB for Kinesis, 1.6 GB of
memory, 31 s); the cap makes its cost that of parsing it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Literal, NamedTuple, TypeVar

from pydantic import ValidationError

from sluice import __version__
from sluice.core.contracts import (
    NO_CONTROL_CHARACTERS,
    DeadLetter,
    ErrorType,
    Source,
    Stage,
    control_character_problem,
    make_event_id,
)

__all__ = [
    "MAX_DEAD_LETTERS",
    "MAX_RAW_BYTES",
    "BatchResult",
    "CappedDeadLetters",
    "ColumnBatch",
    "Rejection",
    "count_by_reason",
    "count_rejected",
    "dead_letter",
    "describe_validation_error",
    "is_blank",
    "raw_bytes",
]

MAX_RAW_BYTES = 64 * 1024
"""Bytes of the original input kept in a dead letter; the rest is cut and ``raw_truncated`` set."""

MAX_MESSAGE_CHARS = 2000

MAX_DEAD_LETTERS = 100
"""Default cap on dead letters built one by one per request or batch (``CoreSettings.max_dead_letters``)."""
SAMPLE_RECORDS = 10
"""Suppressed records kept (each cut to ``SAMPLE_RECORD_BYTES``) in a ``too_many_errors`` letter."""
SAMPLE_RECORD_BYTES = 1024

_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"

T = TypeVar("T")


def is_blank(raw: bytes | str) -> bool:
    """An empty record or one of ASCII whitespace only (space, tab, CR, LF, VT, FF): skipped and
    counted by every parser and edge, never a dead letter. Text and bytes agree (``str.isspace``
    would also take Unicode spaces and the separators U+001C-U+001F)."""
    if isinstance(raw, str):
        return not raw.strip(_ASCII_WHITESPACE)
    return not raw or raw.isspace()


class Rejection(NamedTuple):
    """A rejected input before it becomes a dead letter: why, and what to keep as its raw input."""

    error_type: ErrorType
    message: str
    raw: bytes | str


def count_rejected(dead_letters: Sequence[DeadLetter], suppressed: Mapping[ErrorType, int]) -> int:
    """Rejected inputs of a batch: its dead letters (``too_many_errors`` summaries aside) and the
    rejections over the cap that a summary counts."""
    summaries = sum(1 for d in dead_letters if d.error_type is ErrorType.TOO_MANY_ERRORS)
    return len(dead_letters) - summaries + sum(suppressed.values())


C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class ColumnBatch(Generic[C]):
    """What a columnar parse returns: ``BatchResult``'s content with the valid records as one
    columns value (``len(columns) + rejected + skipped`` is the number of inputs)."""

    columns: C
    dead_letters: tuple[DeadLetter, ...] = ()
    skipped: int = 0
    suppressed: dict[ErrorType, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return count_rejected(self.dead_letters, self.suppressed)


@dataclass(slots=True)
class BatchResult(Generic[T]):
    """What a fallible stage returns for a batch: the good records and the dead letters.

    ``valid`` + ``rejected`` + ``skipped`` is the number of inputs.
    """

    valid: list[T] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0
    """Blank records (``is_blank``): neither records nor dead letters."""
    suppressed: dict[ErrorType, int] = field(default_factory=dict)
    """Rejections over the cap, by reason: in a ``too_many_errors`` letter, not one letter each."""
    missing_metrics: int = 0
    """IoT values equal to a configured sentinel (``-200``, ``"NaN"``), left out of their readings:
    missing metrics, not dead letters (``sluice.parsing.iot.Sentinels``)."""

    @property
    def rejected(self) -> int:
        """Rejected inputs: the dead letters (summaries aside) and the suppressed rejections."""
        return count_rejected(self.dead_letters, self.suppressed)

    def extend(self, other: BatchResult[T]) -> None:
        self.valid.extend(other.valid)
        self.dead_letters.extend(other.dead_letters)
        self.skipped += other.skipped
        self.missing_metrics += other.missing_metrics
        for reason, count in other.suppressed.items():
            self.suppressed[reason] = self.suppressed.get(reason, 0) + count


def _as_bytes(raw: bytes | str) -> bytes:
    """Text as its bytes: surrogate escapes become the bytes they stand for; other lone surrogates
    (no UTF-8 text holds them) are written as UTF-8 would, had it allowed them."""
    if not isinstance(raw, str):
        return bytes(raw)
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw.encode("utf-8", "surrogatepass")


def _bounded_raw(raw: bytes | str) -> tuple[str, Literal["utf-8", "base64"], int, bool]:
    data = _as_bytes(raw)
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
    size: int | None = None,
    correlation_id: str | None = None,
) -> DeadLetter:
    """Build a dead letter with a deterministic id (``correlation_id`` is not part of it).

    The id depends on source, stage and error type, and on ``identity`` when given (where the input
    was: a file and line number, a Kinesis position), else on the raw input. Give an identity when
    two equal inputs are two events (two identical bad log lines), so both are kept. ``size``: the
    input's real size when ``raw`` is only its first bytes (an over-long line read in part).
    """
    text, encoding, kept_size, truncated = _bounded_raw(raw)
    if size is None or size < kept_size:
        size = kept_size
    truncated = truncated or size > kept_size
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
        correlation_id=correlation_id,
    )


def describe_validation_error(err: ValidationError) -> tuple[ErrorType, str]:
    """The error type and a one-line message for a contract's refusal (the first error, and a count)."""
    first = err.errors(include_url=False)[0]
    loc = first["loc"]
    if first["type"] == "missing":
        error_type = ErrorType.MISSING_FIELD
    elif loc and loc[0] in ("event_time", "updated_time"):
        error_type = ErrorType.INVALID_TIMESTAMP
    else:
        error_type = ErrorType.SCHEMA_VIOLATION
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    # A validator's own ValueError reads "Value error, <its message>": the message is enough.
    text = first["msg"].removeprefix("Value error, ")
    if (
        first["type"] == "string_pattern_mismatch"
        and first.get("ctx", {}).get("pattern") == NO_CONTROL_CHARACTERS
        and isinstance(first["input"], str)
    ):
        text = control_character_problem(first["input"]) or text
    return error_type, f"{'.'.join(str(p) for p in loc)}: {text}{more}"


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


class CappedDeadLetters:
    """The dead letters of one request or batch, at most ``limit`` of them built one by one.

    Rejections beyond ``limit`` cost no ``DeadLetter`` each: they are counted by reason, hashed
    (BLAKE2b-128 over each raw input and a newline) and the first ``SAMPLE_RECORDS`` kept, cut to
    ``SAMPLE_RECORD_BYTES``, for the one ``too_many_errors`` letter ``finish`` adds. Its raw input is
    that sample, one record per line; its message gives the counts, the digest (of the request body
    when the caller gives one, else of the suppressed records) and the cap; its id is made from the
    digest and the identity of the first suppressed record, so a retried request or a re-read file
    yields the same summary.
    """

    __slots__ = ("_built", "_digest", "_first", "_sample", "first_seen", "letters", "limit",
                 "source", "stage", "suppressed")  # fmt: skip
    # ``digest_suppressed=False``: the caller will give the body's digest, hashing each is wasted.

    def __init__(
        self,
        source: Source,
        stage: Stage,
        limit: int = MAX_DEAD_LETTERS,
        *,
        first_seen: datetime | None = None,
        digest_suppressed: bool = True,
    ) -> None:
        if limit < 1:
            raise ValueError("the dead-letter cap must be >= 1")
        self.source, self.stage, self.limit, self.first_seen = source, stage, limit, first_seen
        self.letters: list[DeadLetter] = []
        self._built = 0  # letters built one by one, ``drain``ed ones included
        self.suppressed: dict[ErrorType, int] = {}
        self._digest = hashlib.blake2b(digest_size=16) if digest_suppressed else None
        self._sample: list[bytes] = []
        self._first: tuple[object, ...] | None = None

    def add(
        self,
        rejection: Rejection,
        *,
        identity: tuple[object, ...] | None = None,
        size: int | None = None,
    ) -> DeadLetter | None:
        """Dead-letter ``rejection`` (see ``dead_letter``), or count it once the cap is reached;
        the letter built, or ``None`` when it was suppressed."""
        if self._built < self.limit:
            letter = dead_letter(
                self.source, self.stage, rejection.error_type, rejection.message, rejection.raw,
                first_seen=self.first_seen, identity=identity, size=size,
            )  # fmt: skip
            self.letters.append(letter)
            self._built += 1
            return letter
        suppressed = self.suppressed
        suppressed[rejection.error_type] = suppressed.get(rejection.error_type, 0) + 1
        if self._digest is not None:
            self._digest.update(_as_bytes(rejection.raw))
            self._digest.update(b"\n")
        if len(self._sample) < SAMPLE_RECORDS:
            self._sample.append(_as_bytes(rejection.raw)[:SAMPLE_RECORD_BYTES])
        if self._first is None:
            self._first = identity or (self._built,)
        return None

    @property
    def saturated(self) -> bool:
        """The cap is reached and the sample is full: a further rejection changes only the counts
        (and the digest of suppressed records, when that is kept), so ``count`` can take many."""
        return self._built >= self.limit and len(self._sample) >= SAMPLE_RECORDS

    def count(self, error_type: ErrorType, raw: bytes | str, times: int = 1) -> None:
        """``times`` rejections of ``error_type`` whose raw input is ``raw``, suppressed at once:
        what ``add`` would do ``times`` times once ``saturated`` holds (checked)."""
        if not self.saturated:
            raise ValueError("count() is for rejections past the cap once the sample is full")
        self.suppressed[error_type] = self.suppressed.get(error_type, 0) + times
        if self._digest is not None:
            data = _as_bytes(raw) + b"\n"
            for _ in range(times):
                self._digest.update(data)

    def count_records(self, counts: Mapping[ErrorType, int], records: bytes) -> None:
        """Many suppressed rejections at once, once ``saturated`` holds (checked): ``counts`` by
        reason, and ``records`` their raw inputs in order, each followed by a newline (what ``add``
        would hash one by one)."""
        if not self.saturated:
            raise ValueError(
                "count_records() is for rejections past the cap once the sample is full"
            )
        for error_type, times in counts.items():
            self.suppressed[error_type] = self.suppressed.get(error_type, 0) + times
        if self._digest is not None:
            self._digest.update(records)

    def drain(self, result: BatchResult[T]) -> None:
        """Move the letters built so far into ``result`` (one batch of several the cap spans); the
        cap still counts them, and ``finish`` adds the rest and the summary to the last batch."""
        result.dead_letters.extend(self.letters)
        self.letters = []

    def finish(
        self,
        result: BatchResult[T],
        *,
        scope: str = "batch",
        body_digest: str | None = None,
        body_size: int | None = None,
    ) -> None:
        """Move the letters, the suppressed counts and (when some were suppressed) the summary
        letter into ``result``. ``scope`` names the unit the cap applies to in the message."""
        result.dead_letters.extend(self.letters)
        if not self.suppressed:
            return
        for reason, count in self.suppressed.items():
            result.suppressed[reason] = result.suppressed.get(reason, 0) + count
        total = sum(self.suppressed.values())
        counts = ", ".join(f"{r.value}={n}" for r, n in sorted(self.suppressed.items()))
        if body_digest is not None:
            digest = f"body blake2b-128 {body_digest}"
            if body_size is not None:
                digest += f" ({body_size} bytes)"
        elif self._digest is not None:
            body_digest = self._digest.hexdigest()
            digest = f"suppressed records blake2b-128 {body_digest}"
        else:
            raise ValueError("digest_suppressed=False needs the body_digest")
        message = (
            f"{total} more rejections than the {self.limit} dead-lettered one by one in this "
            f"{scope}: {counts}; {digest}; raw: the first {len(self._sample)} of them, one per line"
        )
        result.dead_letters.append(
            dead_letter(
                self.source, self.stage, ErrorType.TOO_MANY_ERRORS, message,
                b"\n".join(self._sample), first_seen=self.first_seen,
                identity=(body_digest, *(self._first or ())),
            )
        )  # fmt: skip
