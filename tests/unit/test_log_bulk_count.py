"""Past the dead-letter cap the log edge counts the rest of a file in bulk (pieces of junk lines
only change counts); whatever the mix of lines, what it yields equals reading the file line by line.

A 100 MiB gzip bomb of ``1\\n`` lines used to take about 1.7 us a line (over 80 s); in bulk a piece
of repeated junk costs a split and a count.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import ErrorType, Source, Stage
from sluice.core.deadletters import SAMPLE_RECORDS, BatchResult, CappedDeadLetters
from sluice.edges import ingest
from sluice.edges.ingest import (
    iter_bounded_lines,
    log_dead_letters,
    log_lines_to_envelopes,
    read_log_stream,
)
from sluice.parsing.weblog import LogParser

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GOOD = b'192.0.2.1 - - [30/Nov/2026:11:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "-"'
MAX_LINE = 120
LINES = st.sampled_from(
    [
        GOOD,
        b"1",
        b"junk",
        b"",
        b"   ",
        b"x\r",
        b"\xff\xfe",
        b"{}",
        b"2" * (MAX_LINE + 30),
        GOOD + b"\r",
    ]
)


def line_by_line(data: bytes, parser: LogParser, cap: int) -> BatchResult:
    letters = log_dead_letters(max_dead_letters=cap, now=NOW)
    lines = list(iter_bounded_lines(io.BytesIO(data), MAX_LINE))
    return log_lines_to_envelopes(
        parser, lines, "s3://b/k", max_line_bytes=MAX_LINE, now=NOW, max_dead_letters=cap,
        letters=letters,
    )  # fmt: skip


def in_batches(data: bytes, parser: LogParser, cap: int) -> BatchResult:
    total: BatchResult = BatchResult()
    for batch in read_log_stream(
        io.BytesIO(data), "s3://b/k", parser, batch_lines=3, max_line_bytes=MAX_LINE, now=NOW,
        max_dead_letters=cap,
    ):  # fmt: skip
        total.extend(batch)
    return total


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(LINES, min_size=0, max_size=200),
    final_newline=st.booleans(),
    cap=st.integers(min_value=1, max_value=3),
    piece=st.integers(min_value=1, max_value=200),
)
def test_bulk_counting_equals_line_by_line(
    lines: list[bytes], final_newline: bool, cap: int, piece: int
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    parser = LogParser()
    saved, ingest._BULK_PIECE_BYTES = ingest._BULK_PIECE_BYTES, piece
    try:
        expected, got = line_by_line(data, parser, cap), in_batches(data, parser, cap)
    finally:
        ingest._BULK_PIECE_BYTES = saved
    assert got.valid == expected.valid
    assert got.dead_letters == expected.dead_letters
    assert (got.skipped, got.suppressed) == (expected.skipped, expected.suppressed)


def test_a_bomb_of_one_junk_line_is_counted_not_parsed_line_by_line() -> None:
    # GIVEN 2 M lines of "1" (the gzip bomb's shape), cap 100
    data = b"1\n" * 2_000_000
    result = in_batches(data, LogParser(), 100)
    # THEN 100 letters and one summary of the rest, every line accounted for
    assert len(result.dead_letters) == 101
    assert result.suppressed == {ErrorType.UNPARSEABLE_LINE: 2_000_000 - 100}


def test_count_records_needs_a_saturated_cap() -> None:
    letters = CappedDeadLetters(Source.WEBLOG, Stage.PARSE, 1)
    with pytest.raises(ValueError):
        letters.count_records({ErrorType.UNPARSEABLE_LINE: 1}, b"1\n")
    assert SAMPLE_RECORDS > 1
