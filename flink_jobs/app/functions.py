"""The PyFlink job's functions: a few lines each around the core. They keep no state: the keyed,
timed steps between them are Java (``flink_jobs.app.operators``), whose timers are checkpointed
with their state.

``RunStages``: one shard's batch of records (a ``BatchRecords`` frame: emitted when
``batch_max_records`` are buffered, after ``batch_max_millis``, or before the watermark passes the
first buffered arrival, so a window is never closed while records for it wait) -> KPL
de-aggregation (``sluice.stream.kpl``) -> ``sluice.stream.run.StageRunner``. Out: rows per table
(event rows, dead letter rows) and, per window table, partial aggregates (serialized) keyed for
``CloseWindows``.
``MergeWindows``: a closed window's partials (``CloseWindows`` emits them when the arrival-time
watermark passes ``window_end + allowed_lateness``: no arriving event can change the window after
that, ``sluice.stream.stages.window_batch``) merged into the window's one row (the accumulators'
own byte form, ``sluice.transform.accumulators``).
Dead letters: every rejected record, with its reason, from the stages; and here, a partial that
reaches a window already written (a re-driven event of an old window, or records more out of order
than the watermark allows): ``too_late`` at stage ``window``, never dropped.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from flink_jobs.app.operators import batch_user_records, read_states
from flink_jobs.app.rows import (
    EVENT_TABLES,
    dead_letter_row,
    event_row,
    row_type,
    window_row,
)
from sluice.core.contracts import ErrorType, Source, Stage
from sluice.core.deadletters import dead_letter
from sluice.stream.stages import Event, JobBatch

__all__ = [
    "KINESIS_RECORD",
    "PARTIAL",
    "ROUTED",
    "USER_RECORD",
    "MergeWindows",
    "RouteRows",
    "RunStages",
    "table_tags",
]

KINESIS_RECORD = Types.ROW_NAMED(
    ["shard_id", "sequence_number", "arrival_millis", "data"],
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())],
)
"""One Kinesis record as a source gives it (not de-aggregated)."""
USER_RECORD = Types.ROW_NAMED(
    ["shard_id", "sequence", "sub", "arrival", "data"],
    [
        Types.STRING(),
        Types.STRING(),
        Types.INT(),
        Types.DOUBLE(),
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
    ],
)
"""One user record (a KPL aggregate's records share ``sequence``); arrival in epoch seconds."""
PARTIAL = Types.ROW_NAMED(
    ["key", "close_millis", "state"],
    [Types.STRING(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())],
)
"""A window's partial aggregate: key ``[*group, window_start_micros]`` as JSON, when the window
closes (arrival time, ms), the accumulator's bytes."""

TABLES = ("iot_readings", "web_requests", "feed_items", "dead_letters")
WINDOWED = {"iot_metrics_1m": Source.IOT, "web_traffic_1m": Source.WEBLOG}


ROUTED = Types.TUPLE([Types.STRING(), Types.PICKLED_BYTE_ARRAY()])
"""A table row on its way to ``RouteRows``: the table's name and the row's values (a tuple)."""


def table_tags() -> dict[str, OutputTag]:
    """The side output of every table's rows (``RouteRows``), and of every window table's
    partials (``RunStages``)."""
    tags = {name: OutputTag(name, row_type(name)) for name in (*TABLES, *WINDOWED)}
    tags.update({f"{name}.partials": OutputTag(f"{name}.partials", PARTIAL) for name in WINDOWED})
    return tags


class RouteRows(ProcessFunction):  # type: ignore[misc]
    """Every table's rows, from one task, each to its table's side output.

    Why one task: the six Iceberg sinks are chained to it (writers at parallelism 1), so their
    committers run in one thread and commit one after the other. Iceberg's JDBC catalog over
    SQLite fails commits that overlap (SQLITE_BUSY / SQLITE_BUSY_SNAPSHOT: a committer's read of
    the current metadata is overtaken by another's write), which restarts the job.
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        # Made here, not in __init__: a type already used by the job holds its Java object,
        # which cannot be pickled with the function.
        self.tags = table_tags()

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Any:
        table, values = value[0], value[1]
        yield self.tags[table], Row(*values)


class RunStages(ProcessFunction):  # type: ignore[misc]
    """A batch of one shard's records (a ``batch_records`` frame) through every core stage."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.runner: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        from sluice.stream.run import StageRunner

        self.tags = table_tags()
        self.runner = StageRunner(self.settings)
        self.window_millis = self.settings.window_seconds * 1000
        self.lateness_millis = self.settings.allowed_lateness_seconds * 1000

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Any:
        shard, frame = value[0], value[1]
        batch = self.runner.run(shard, batch_user_records(bytes(frame)))
        yield from self._outputs(batch)

    def _outputs(self, batch: JobBatch) -> Any:
        for source, table in EVENT_TABLES.items():
            for event in batch.events.get(source, []):
                yield table, event_row(source, event)
        for letter in batch.dead_letters:
            yield "dead_letters", dead_letter_row(letter)
        for table, partials in (
            ("iot_metrics_1m", batch.iot_windows),
            ("web_traffic_1m", batch.web_windows),
        ):
            tag = self.tags[f"{table}.partials"]
            for key, stats in partials.items():
                *group, start = key
                start_micros = _micros(start)
                close = start_micros // 1000 + self.window_millis + self.lateness_millis
                name = orjson.dumps([*group, start_micros]).decode()
                yield tag, Row(name, close, stats.to_bytes())


def _micros(when: datetime) -> int:
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


class MergeWindows(ProcessFunction):  # type: ignore[misc]
    """A closed window's partials (a ``close_windows`` frame) merged into its row; a late partial
    into its ``too_late`` dead letter."""

    def __init__(self, table: str, window_seconds: int) -> None:
        self.table = table
        self.window_seconds = window_seconds

    def open(self, runtime_context: RuntimeContext) -> None:
        from sluice.transform.accumulators import MetricStats, WebTrafficStats

        self.accumulator = MetricStats if self.table == "iot_metrics_1m" else WebTrafficStats

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Any:
        key, late, states = value[0], value[1], read_states(bytes(value[2]))
        if late:
            for state in states:
                yield "dead_letters", dead_letter_row(self._too_late(key, state))
            return
        merged = self.accumulator.from_bytes(states[0])
        for state in states[1:]:
            merged = merged.merge(self.accumulator.from_bytes(state))  # type: ignore[arg-type]
        *group, start_micros = orjson.loads(key)
        yield (
            self.table,
            window_row(
                self.table, tuple(group), _from_micros(start_micros), merged, self.window_seconds
            ),
        )

    def _too_late(self, key: str, state_bytes: bytes) -> Event:
        state = base64.b64encode(state_bytes).decode()
        *group, start_micros = orjson.loads(key)
        start = _from_micros(start_micros)
        raw = orjson.dumps(
            {
                "table": self.table,
                "key": key,
                "state": state,
            }
        )
        letter = dead_letter(
            WINDOWED[self.table], Stage.WINDOW, ErrorType.TOO_LATE,
            f"a partial aggregate of window {start.isoformat()} {group} reached {self.table} "
            "after the window's row was written",
            raw, event_time=start, first_seen=start,
            identity=(self.table, key, state),
        )  # fmt: skip
        return Event(0, 0, 0.0, letter.dead_letter_id, letter.first_seen, letter)
