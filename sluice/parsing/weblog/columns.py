"""Columnar access-log parse: a batch of raw lines in, the columns enrichment and aggregation read out.

In: a batch of raw lines (bytes or str) and a ``LogParser``, as ``LogParser.parse_batch`` takes them.
Out: ``WebLogBatch``: the valid lines' ``ANALYTIC_FIELDS`` (client address, X-Forwarded-For, event
time, path, status, bytes sent, request time) as ``WebLogColumns``, one tuple per field, row ``i``
of each from the ``i``-th valid line; the dead letters and the counts of a ``BatchResult``. Never
raises for bad input.
Dead letters: exactly those of ``parse_batch`` on the same batch, in the same order, and the
columns hold exactly the values of its records (tests/unit/test_weblog_columns.py proves both over
generated inputs).

How: plain lines take the bulk path (``sluice.parsing.weblog.bulk``), whose column conversion
already yields these values; here they are kept as columns (``BulkPlan.analytics``) and no record
is built. A line the bulk path cannot vouch for goes through ``parse_raw``, as in ``parse_many``,
and its record's values join the columns in its place.
Why: building and freeing a 29-field record costs more than matching its line. The windows of web
traffic (``sluice.transform.aggregate.aggregate_web_columns``) and the GeoIP lookups
(``GeoIpEnricher.lookup_clients``) need seven of its fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluice.core.contracts import DEFAULT_HORIZON, Source, Stage, TimeHorizon
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    BatchResult,
    CappedDeadLetters,
    ColumnBatch,
    Rejection,
)
from sluice.parsing.weblog.bulk import ANALYTIC_FIELDS, plain_lines
from sluice.parsing.weblog.parser import MAX_LINE_BYTES, STAGE, LogParser

__all__ = ["ANALYTIC_FIELDS", "WebLogBatch", "WebLogColumns", "parse_weblog_columns"]


@dataclass(frozen=True, slots=True)
class WebLogColumns:
    """Valid access-log lines, the fields enrichment and aggregation read, column by column.
    Immutable: tuples (the ``forwarded_for`` lists are the batch's own; treat them as read-only)."""

    client_ip: tuple[str | None, ...] = ()
    forwarded_for: tuple[list[str], ...] = ()
    event_time: tuple[datetime, ...] = ()
    path: tuple[str | None, ...] = ()
    status: tuple[int, ...] = ()
    bytes_sent: tuple[int | None, ...] = ()
    request_time: tuple[float | None, ...] = ()
    """Seconds, or None where the line logged none."""

    def __len__(self) -> int:
        return len(self.status)


WebLogBatch = ColumnBatch[WebLogColumns]
"""What ``parse_weblog_columns`` returns: the valid lines as columns, and the dead letters and counts."""


def parse_weblog_columns(
    parser: LogParser,
    lines: Iterable[bytes | str],
    *,
    stage: Stage = STAGE,
    horizon: TimeHorizon = DEFAULT_HORIZON,
    now: datetime | None = None,
    max_dead_letters: int = MAX_DEAD_LETTERS,
) -> WebLogBatch:
    """``parser.parse_batch`` (same arguments, same dead letters, the values of the same records),
    columnar."""
    raws: Sequence[bytes | str] = lines if isinstance(lines, list) else list(lines)
    context = horizon.context(now)
    plan = parser._bulk
    plain = plain_lines(raws, MAX_LINE_BYTES) if plan is not None else None
    if plan is None or plain is None:
        columns: dict[str, list[Any]] = {name: [None] * len(raws) for name in ANALYTIC_FIELDS}
        done = bytearray(len(raws))
    else:
        found, where = plain
        read, read_done = plan.analytics(found, context)
        if len(where) == len(raws):
            columns, done = read, read_done
        else:  # some lines were not plain: spread the plain ones to their places
            columns = {name: [None] * len(raws) for name in ANALYTIC_FIELDS}
            done = bytearray(len(raws))
            for name, values in read.items():
                column = columns[name]
                for index, value in zip(where, values, strict=True):
                    column[index] = value
            for index, flag in zip(where, read_done, strict=True):
                done[index] = flag
    letters = CappedDeadLetters(Source.WEBLOG, stage, max_dead_letters)
    skipped = 0
    if done.count(1) != len(raws):
        keep = bytearray(done)
        parse = parser.parse_raw
        for index, raw in enumerate(raws):
            if done[index]:
                continue
            outcome = parse(raw, context)
            if outcome is None:
                skipped += 1
            elif type(outcome) is Rejection:
                letters.add(outcome)
            else:
                keep[index] = 1
                fields = outcome.__dict__
                for name, column in columns.items():
                    column[index] = fields[name]
        if keep.count(1) != len(raws):
            rows = [i for i, flag in enumerate(keep) if flag]
            columns = {name: [column[i] for i in rows] for name, column in columns.items()}
    result: BatchResult[Any] = BatchResult()
    letters.finish(result)
    return ColumnBatch(
        WebLogColumns(**{name: tuple(column) for name, column in columns.items()}),
        tuple(result.dead_letters),
        skipped,
        dict(result.suppressed),
    )
