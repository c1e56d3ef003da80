"""Re-driving dead letters: list them, re-try them with today's configuration, remove the fixed ones.

In: the ``dead_letters`` Iceberg table, the current log format and feed specs, and a ``publish``
callable (the CLI passes the edges' Kinesis publisher; this module never imports boto3).
Out: envelopes for the stream, one JSON-able ``RedriveReport``, and one Iceberg commit removing the
re-driven dead letters from the table.

What is re-tried (``plan_redrive``):
- ``too_late``: never. The event parsed fine; its window closed and was committed, so re-sending it
  would only make it late again. They stay in the table to be listed and counted.
- ``too_many_errors``: never. Such a letter is a summary (counts by reason, a digest of the input and
  a sample of its first suppressed records), not a record: re-parsing the sample would re-send part
  of an input and remove the only trace of the rest. They stay in the table.
Both are reported as ``skipped`` (counts by error type in ``RedriveReport.skipped``).
- A raw that is an envelope (``delivery_failed`` letters, and the job's own ``parse`` rejections,
  whose raw is the Kinesis user record): its payload is validated against today's contract and, if
  it passes, the envelope is re-submitted unchanged (its event id is the original one).
- Web-log lines (``unparseable_line``, ``invalid_timestamp``, ...): ``raw_bytes(letter)`` re-parsed
  with the given log format. IoT messages: re-parsed with today's IoT parser. Feed items: re-parsed
  with the configured feed spec (only when exactly one feed is configured: a dead letter does not
  say which feed it came from).
- A truncated raw (``raw_truncated``) is never re-driven: the input is not whole any more.
A letter is re-driven all or nothing: if any part of its raw still fails, nothing of it is sent.

Event ids of re-parsed records are deterministic functions of the dead letter:
``make_event_id(source, "redrive", dead_letter_id)`` (for a web log that is exactly
``weblog_event_id("redrive", dead_letter_id)``), and ``make_event_id(source, "redrive",
dead_letter_id, i)`` for the i-th (i >= 1) record of a raw holding several (an IoT array). The
envelope's ``ingest_time`` is the letter's ``first_seen``, and every re-driven record envelope
carries ``redrive_of`` = the letter's ``dead_letter_id`` (an envelope re-submitted as is gets it too,
its event id unchanged), so re-driving the same letter twice produces byte-identical envelopes.

Guarantee (``redrive``): delivery at least once, landing exactly once.
1. the envelopes of every re-drivable letter are published, then
2. those letters are deleted from ``dead_letters`` in ONE Iceberg commit, by ``dead_letter_id``, whose
   snapshot summary records the run (``sluice.redrive``) and carries the table's current source
   positions (``sluice.positions``), so the job's exactly-once resume is unaffected.
A letter is removed only after its envelopes were accepted by the stream, and a removed letter is
never re-driven again: once step 2 commits, a second run publishes nothing for it. If the process
dies between 1 and 2 (or the publish fails part-way, or step 2 loses a commit race three times), the
letters stay and the next run publishes the *same* envelopes with the *same* event ids again, so the
stream may hold a re-driven event more than once (delivery: at least once). The job lands it once:
its table writer drops every event whose event id and event time are already in the event table, or
earlier in the same flush, before appending rows and before merging window partials
(``sluice.tables.warehouse``; it does this for all events, re-driven or not, and stays exact across
a crash between a window table's and its event table's commit). So each re-driven record is one
row of its event table and counts once in its window (landing: exactly once), however many times
the re-drive was retried. Do not run two re-drives concurrently.

Lateness: the stream job decides lateness by arrival time, but a re-driven event is never
``too_late``: an IoT reading or web request whose window closed long ago is merged into that
window (the window tables keep mergeable state), so a late fix corrects old windows. ``too_late``
letters themselves are still never re-driven. Feed items are never late.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pyarrow as pa
from pydantic import BaseModel, ValidationError
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In
from pyiceberg.table import Table

from sluice.core.contracts import (
    DeadLetter,
    Envelope,
    ErrorType,
    FeedItem,
    IotReading,
    Source,
    WebAccessLog,
    make_event_id,
)
from sluice.core.deadletters import raw_bytes
from sluice.core.errors import RecordRejected, SluiceError
from sluice.core.inputs import decode_json
from sluice.parsing.feeds import FeedSpec, parse_feed_document, parse_feed_item
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import MAX_PARTITION_KEY, wrap_access_log
from sluice.tables.warehouse import POSITIONS_PROPERTY, table_positions

__all__ = [
    "REDRIVE_PROPERTY",
    "RedriveError",
    "plan_letter",
    "plan_redrive",
    "read_letters",
    "redrive",
    "redrive_event_id",
    "remove_letters",
]

REDRIVE_ORIGIN = "redrive"
REDRIVE_PROPERTY = "sluice.redrive"
"""Snapshot summary property of a re-drive's delete commit: when, how many, and a digest of the ids."""
NEVER_REDRIVEN: dict[ErrorType, str] = {
    ErrorType.TOO_LATE: "the window is closed: too_late letters are not re-driven",
    ErrorType.TOO_MANY_ERRORS: "a summary of suppressed rejections, not a record: not re-driven",
}
"""Error types never re-driven, and why (the reason of their ``skipped`` outcome)."""
COMMIT_ATTEMPTS = 3

_CONTRACTS: dict[Source, type[BaseModel]] = {
    Source.IOT: IotReading,
    Source.WEBLOG: WebAccessLog,
    Source.FEED: FeedItem,
}

Status = Literal["redrivable", "still_failing", "skipped"]


def redrive_event_id(letter: DeadLetter, index: int = 0) -> str:
    """The event id of the ``index``-th record re-parsed from ``letter`` (see the module docstring)."""
    if index == 0:
        return make_event_id(letter.source, REDRIVE_ORIGIN, letter.dead_letter_id)
    return make_event_id(letter.source, REDRIVE_ORIGIN, letter.dead_letter_id, index)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What re-driving one letter gives: envelopes to send, or why it is not sent."""

    letter: DeadLetter
    status: Status
    reason: str = ""
    envelopes: tuple[Envelope, ...] = ()


@dataclass(slots=True)
class RedrivePlan:
    outcomes: list[Outcome] = field(default_factory=list)

    def redrivable(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "redrivable"]

    def envelopes(self) -> list[Envelope]:
        return [e for o in self.redrivable() for e in o.envelopes]

    def counts(self, status: Status) -> dict[str, int]:
        """Letters of ``status`` by their (original) error type."""
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.status == status:
                key = outcome.letter.error_type.value
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


def _as_envelope(data: bytes) -> Envelope | None:
    """The envelope a raw holds, when it holds one (a JSON object with event_id and payload)."""
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict) or "event_id" not in decoded or "payload" not in decoded:
        return None
    try:
        return Envelope.model_validate(decoded)
    except ValidationError:
        return None


def _still(letter: DeadLetter, reason: str) -> Outcome:
    return Outcome(letter, "still_failing", reason)


def _record_envelope(letter: DeadLetter, record: BaseModel, index: int) -> Envelope:
    event_id = redrive_event_id(letter, index)
    if isinstance(record, WebAccessLog):
        envelope = wrap_access_log(
            record, REDRIVE_ORIGIN, letter.dead_letter_id, ingest_time=letter.first_seen
        )
        more = {"redrive_of": letter.dead_letter_id, "correlation_id": letter.correlation_id}
        if index == 0:
            return envelope.model_copy(update=more)
        return envelope.model_copy(update={"event_id": event_id, "partition_key": event_id, **more})
    if isinstance(record, IotReading):
        key = record.device_id[:MAX_PARTITION_KEY]
    elif isinstance(record, FeedItem):
        key = f"{record.feed}:{record.item_id}"[:MAX_PARTITION_KEY]
    else:  # pragma: no cover - the three contracts above are all there is
        raise TypeError(type(record).__name__)
    return Envelope(
        source=letter.source,
        event_id=event_id,
        ingest_time=letter.first_seen,
        partition_key=key,
        payload=record.model_dump(mode="json"),
        redrive_of=letter.dead_letter_id,
        correlation_id=letter.correlation_id,
    )


def _reparse(
    letter: DeadLetter, data: bytes, log_parser: LogParser, feeds: Sequence[FeedSpec]
) -> tuple[list[BaseModel], str]:
    """The records a raw input gives today, or the reason it still fails."""
    records: list[BaseModel] = []
    if letter.source == Source.WEBLOG:
        web = log_parser.parse_batch([data])
        if web.dead_letters:
            first = web.dead_letters[0]
            return [], f"{first.error_type.value}: {first.message}"
        records.extend(web.valid)
    elif letter.source == Source.IOT:
        iot = parse_iot_batch([data])
        if iot.dead_letters:
            first = iot.dead_letters[0]
            return [], f"{first.error_type.value}: {first.message}"
        records.extend(iot.valid)
    else:
        if len(feeds) != 1:
            return [], f"{len(feeds)} feeds configured; a feed dead letter does not say which"
        spec = feeds[0]
        try:
            records.append(parse_feed_item(spec, decode_json(data)))
        except (RecordRejected, ValidationError) as item_error:
            document = parse_feed_document(spec, data)  # a whole response rejected at the edge
            if document.dead_letters or not document.valid:
                return [], f"{type(item_error).__name__}: {str(item_error).splitlines()[0]}"
            records.extend(document.valid)
    if not records:
        return [], "nothing to parse (blank input)"
    return records, ""


def plan_letter(letter: DeadLetter, log_parser: LogParser, feeds: Sequence[FeedSpec]) -> Outcome:
    """Re-try one dead letter with today's configuration (see the module docstring for the rules)."""
    if letter.error_type in NEVER_REDRIVEN:
        return Outcome(letter, "skipped", NEVER_REDRIVEN[letter.error_type])
    if letter.raw_truncated:
        return _still(letter, "raw was truncated; the input is not whole")
    try:
        data = raw_bytes(letter)
    except ValueError as err:
        return _still(letter, f"raw cannot be decoded: {err}")
    envelope = _as_envelope(data)
    if envelope is not None:
        if envelope.kind == "record":
            try:
                _CONTRACTS[envelope.source].model_validate(envelope.payload)
            except ValidationError as err:
                return _still(letter, f"payload still refused: {str(err).splitlines()[0]}")
        if envelope.kind == "record":
            envelope = envelope.model_copy(update={"redrive_of": letter.dead_letter_id})
        return Outcome(letter, "redrivable", "envelope re-submitted as is", (envelope,))
    if letter.error_type == ErrorType.DELIVERY_FAILED:
        return _still(letter, "delivery_failed raw is not a valid envelope")
    records, reason = _reparse(letter, data, log_parser, feeds)
    if not records:
        return _still(letter, reason)
    envelopes = tuple(_record_envelope(letter, r, i) for i, r in enumerate(records))
    return Outcome(letter, "redrivable", "re-parsed", envelopes)


def plan_redrive(
    letters: Iterable[DeadLetter], *, log_format: str = "auto", feeds: Sequence[FeedSpec] = ()
) -> RedrivePlan:
    log_parser = LogParser(log_format)
    return RedrivePlan([plan_letter(letter, log_parser, feeds) for letter in letters])


def letter_filter(reason: str | None = None, source: str | None = None) -> BooleanExpression:
    expression: BooleanExpression = AlwaysTrue()
    if reason:
        expression = And(expression, EqualTo(term="error_type", value=reason))
    if source:
        expression = And(expression, EqualTo(term="source", value=source))
    return expression


def read_letters(
    table: Table, *, reason: str | None = None, source: str | None = None, limit: int | None = None
) -> list[DeadLetter]:
    """Dead letters of the table, oldest first (then by id), filtered by error type and source."""
    rows: pa.Table = table.scan(row_filter=letter_filter(reason, source)).to_arrow()
    letters = [DeadLetter.model_validate(row) for row in rows.to_pylist()]
    letters.sort(key=lambda letter: (letter.first_seen, letter.dead_letter_id))
    return letters if limit is None else letters[:limit]


@dataclass(slots=True)
class RedriveReport:
    selected: int = 0
    redriven: int = 0
    envelopes_published: int = 0
    removed: int = 0
    still_failing: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    snapshot_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "redriven": self.redriven,
            "envelopes_published": self.envelopes_published,
            "removed": self.removed,
            "still_failing": self.still_failing,
            "skipped": self.skipped,
            "dry_run": self.dry_run,
            "snapshot_id": self.snapshot_id,
        }


def _current_positions(table: Table) -> str | None:
    positions = table_positions(table)
    if not positions:
        return None
    return json.dumps({s: str(q) for s, q in sorted(positions.items())})


def remove_letters(
    table: Table, ids: Sequence[str], *, now: datetime | None = None
) -> tuple[int, int | None]:
    """Delete ``ids`` from the dead-letter table in one commit; retried on a lost commit race.

    Returns the number of rows removed and the new snapshot id. Rows already gone are not an error.
    """
    if not ids:
        return 0, None
    digest = make_event_id("redrive", *sorted(ids))
    summary = json.dumps(
        {"at": (now or datetime.now(UTC)).isoformat(), "letters": len(ids), "ids_digest": digest}
    )
    for attempt in range(COMMIT_ATTEMPTS):
        table = table.refresh()
        matching = In(term="dead_letter_id", literals=list(ids))
        present = table.scan(row_filter=matching, selected_fields=("dead_letter_id",)).to_arrow()
        if present.num_rows == 0:
            return 0, None
        properties = {REDRIVE_PROPERTY: summary}
        positions = _current_positions(table)
        if positions is not None:
            properties[POSITIONS_PROPERTY] = positions
        try:
            with table.transaction() as tx:
                tx.delete(matching, snapshot_properties=properties)
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            continue
        snapshot = table.refresh().current_snapshot()
        return present.num_rows, snapshot.snapshot_id if snapshot else None
    return 0, None  # pragma: no cover - the loop returns or raises


def redrive(
    table: Table,
    letters: Sequence[DeadLetter],
    publish: Callable[[list[Envelope]], int],
    *,
    log_format: str = "auto",
    feeds: Sequence[FeedSpec] = (),
    dry_run: bool = False,
) -> RedriveReport:
    """Plan, publish, then remove the re-driven letters (see the module docstring's guarantee).

    ``publish`` sends every envelope and returns how many the stream accepted; it raises when it
    cannot deliver them all (nothing is removed then).
    """
    plan = plan_redrive(letters, log_format=log_format, feeds=feeds)
    ready = plan.redrivable()
    report = RedriveReport(
        selected=len(letters),
        redriven=len(ready),
        still_failing=plan.counts("still_failing"),
        skipped=plan.counts("skipped"),
        dry_run=dry_run,
    )
    envelopes = plan.envelopes()
    if dry_run or not ready:
        return report
    sent = publish(envelopes)
    report.envelopes_published = sent
    if sent != len(envelopes):
        raise RedriveError(
            f"the stream accepted {sent} of {len(envelopes)} envelopes; no dead letter was "
            "removed (re-running re-sends the same event ids)"
        )
    report.removed, report.snapshot_id = remove_letters(
        table, [o.letter.dead_letter_id for o in ready]
    )
    return report


class RedriveError(SluiceError):
    """A re-drive that published but could not finish; the letters stay for the next run."""
