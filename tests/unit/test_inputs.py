"""Bounded reading: lines cut while they are read, blank lines dropped, documents within a bound."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.inputs import iter_line_batches, json_array_elements, read_bounded


class Trickle(io.RawIOBase):
    """A stream that hands out its bytes a few at a time, as a pipe or a gzip reader may."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.at, self.calls = data, sizes or [1], 0, 0

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        step = self.sizes[self.calls % len(self.sizes)]
        self.calls += 1
        piece = self.data[self.at : self.at + min(step, size if size >= 0 else step)]
        self.at += len(piece)
        return piece

    read = read1


def expected(data: bytes, limit: int) -> tuple[list[bytes], list[tuple[int, bytes, int]]]:
    """What the reader must produce, computed the obvious (unbounded) way."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    kept, oversized = [], []
    for number, part in enumerate(parts, start=1):
        line = part[:-1] if part.endswith(b"\r") else part
        if not line or line.isspace():
            continue
        if len(line) > limit:
            oversized.append((number, line[:limit], len(line)))
        else:
            kept.append(line)
    return kept, oversized


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=80).map(lambda b: b.replace(b"\x00", b"\n")),
    limit=st.integers(1, 12),
    sizes=st.lists(st.integers(1, 9), max_size=5),
    head_size=st.integers(0, 20),
    batch_lines=st.integers(1, 5),
    batch_bytes=st.integers(1, 40),
)
def test_lines_are_the_obvious_split_whatever_the_read_sizes(
    data: bytes, limit: int, sizes: list[int], head_size: int, batch_lines: int, batch_bytes: int
) -> None:
    # GIVEN any bytes, delivered in arbitrary pieces, part of them already read (a head)
    head, rest = data[:head_size], data[head_size:]

    # WHEN read as line batches
    kept: list[bytes] = []
    oversized: list[tuple[int, bytes, int]] = []
    for batch in iter_line_batches(
        Trickle(rest, sizes), limit, batch_lines=batch_lines, batch_bytes=batch_bytes, head=head
    ):
        assert len(batch.lines) <= batch_lines
        kept.extend(batch.lines)
        oversized.extend((line.number, line.head, line.size) for line in batch.oversized)

    # THEN the lines, cut lines and line numbers are those of a plain split
    assert (kept, oversized) == expected(data, limit)


class Pieces(io.RawIOBase):
    """A stream made on demand from pieces, so a test can feed more than it could hold."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        return next(self.pieces, b"")

    read = read1


def test_a_newline_free_stream_costs_the_limit_not_its_size() -> None:
    # GIVEN a 4 GiB line produced on demand (never held: holding it would exhaust the test's memory)
    pieces = itertools.chain(itertools.repeat(b"x" * (1 << 20), 4096), [b"\nafter\n"])

    # WHEN read with a 1000-byte limit
    batches = list(iter_line_batches(Pieces(pieces), 1000))

    # THEN one cut line with its real size, and the next line as usual
    (cut,) = [line for batch in batches for line in batch.oversized]
    assert (cut.number, cut.size, cut.head) == (1, 4 << 30, b"x" * 1000)
    assert [line for batch in batches for line in batch.lines] == [b"after"]


def test_runs_of_blank_lines_are_skipped_without_becoming_lines() -> None:
    data = b"\n" * 3_000_000 + b" \t\r\n" * 1000 + b"one\r\n" + b"\n" * 10 + b"two"
    batches = list(iter_line_batches(io.BytesIO(data), 100))
    assert [line for batch in batches for line in batch.lines] == [b"one", b"two"]
    assert not any(batch.oversized for batch in batches)


def test_a_batch_is_handed_on_by_lines_and_by_bytes() -> None:
    data = b"".join(b"%05d\n" % i for i in range(25_000))
    sizes = [len(b.lines) for b in iter_line_batches(io.BytesIO(data), 10, batch_lines=10_000)]
    assert sum(sizes) == 25_000 and max(sizes) <= 10_000
    long_lines = b"".join(b"y" * 1000 + b"\n" for _ in range(5000))
    by_bytes = list(iter_line_batches(io.BytesIO(long_lines), 1000, batch_bytes=100_000))
    assert len(by_bytes) > 1 and all(len(b.lines) * 1000 <= 100_000 + (1 << 20) for b in by_bytes)


@pytest.mark.parametrize(
    ("data", "limit", "complete"),
    [(b"", 4, True), (b"abcd", 4, True), (b"abcde", 4, False), (b"x" * 3_000_000, 1000, False)],
)
def test_read_bounded_keeps_the_limit_and_counts_the_rest(
    data: bytes, limit: int, complete: bool
) -> None:
    read = read_bounded(io.BytesIO(data), limit)
    assert (read.complete, read.size, read.data) == (complete, len(data), data[:limit])


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=10,
    ),
    st.sampled_from(["", " ", "\n", " \r\n\t"]),
)
def test_array_elements_are_the_raw_text_of_each_element(value: object, space: str) -> None:
    document = json.dumps(value, indent=1 if space else None) + space
    elements = json_array_elements(space + document)
    if isinstance(value, list):
        assert elements is not None
        assert [json.loads(e) for e in elements] == value
    else:
        assert elements is None


@pytest.mark.parametrize(
    "text", ["[1] [2]", "[1,]", "[1 2]", "[", "", '{"a": 1}', "[1]x", "[" * 5000 + "]" * 5000]
)
def test_anything_but_one_array_has_no_elements(text: str) -> None:
    assert json_array_elements(text) is None
