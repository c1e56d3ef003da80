"""The window stage dead-letters an event whose window a table cannot hold, and only that one.

GIVEN IoT events dated across the whole calendar (the edges, a minute from the last instant a
datetime holds, and a window size too large for any sure range), WHEN ``window_batch`` runs, THEN
exactly the events ``window_problem`` refuses are ``invalid_timestamp`` dead letters, with its
message, and every other event is windowed. The batch's quick range check must never let through
an event the full check would refuse, nor refuse one it would accept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.core.contracts import ErrorType, IotReading, Source
from sluice.stream.stages import LAST_STORABLE, Event, JobBatch, window_batch, window_problem

ARRIVAL = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
EARLIEST = datetime.min.replace(tzinfo=UTC)


def _batch(times: list[datetime]) -> JobBatch:
    events = tuple(
        Event(7, i, ARRIVAL, f"e{i}", datetime(2026, 12, 1, tzinfo=UTC),
              IotReading.model_construct(device_id="d", event_time=t, metrics={"x": 1.0},
                                         attributes={}, location=None, message_id=None, flags=[]))
        for i, t in enumerate(times)
    )  # fmt: skip
    return JobBatch("shardId-000000000000", 7, 7, None, ARRIVAL, events={Source.IOT: events})


def _outcome(times: list[datetime], size: int) -> tuple[set[int], set[int]]:
    """The indexes of the events windowed and of those dead-lettered."""
    out = window_batch(_batch(times), size, 10**12)  # lateness: none is too late
    for letter in out.dead_letters:
        assert letter.record.error_type is ErrorType.INVALID_TIMESTAMP
        assert "the last time a table can hold" in letter.record.message
    return {e.sub_sequence for e in out.events[Source.IOT]}, {
        e.sub_sequence for e in out.dead_letters
    }


EDGES = [
    LAST_STORABLE,
    LAST_STORABLE - timedelta(seconds=30),
    LAST_STORABLE - timedelta(seconds=60),
    LAST_STORABLE - timedelta(days=1, seconds=60),
    LAST_STORABLE - timedelta(days=1, seconds=61),
    datetime(2026, 12, 1, 12, tzinfo=UTC),
    EARLIEST + timedelta(days=1, seconds=60),
    EARLIEST + timedelta(seconds=30),
    EARLIEST,
]


@pytest.mark.parametrize("size", [60, 3600, 86_400 * 366, 10**15])
def test_exactly_the_events_window_problem_refuses_are_dead_letters(size: int) -> None:
    kept, letters = _outcome(EDGES, size)
    refused = {i for i, t in enumerate(EDGES) if window_problem(t, size) is not None}
    assert letters == refused and kept == set(range(len(EDGES))) - refused
    assert window_problem(LAST_STORABLE, 60) is not None  # the edge is really exercised


@given(st.lists(st.datetimes(timezones=st.just(UTC)), max_size=8), st.sampled_from([1, 60, 3600]))
def test_any_calendar_time_is_judged_as_window_problem_judges_it(
    times: list[datetime], size: int
) -> None:
    kept, letters = _outcome(times, size)
    refused = {i for i, t in enumerate(times) if window_problem(t, size) is not None}
    assert letters == refused and kept == set(range(len(times))) - refused
