"""The PyFlink job's functions: a few lines each around the core.

``DeaggregateRecords`` (flat map): one Kinesis record Row -> its user records (``sluice.stream.kpl``).
``RunStages`` (keyed by shard): buffers a shard's user records in keyed state and runs them through
``sluice.stream.run.StageRunner`` as one batch, when ``batch_max_records`` are buffered, after
``batch_max_millis`` of processing time, or before the watermark passes the first buffered arrival
(so a window is never closed while records for it wait here). Out: one side output per table
(event rows, dead letter rows) and one per window table (partial aggregates, serialized).
``MergeWindows`` (keyed by window key): merges the partials of one window in keyed state (the
accumulators' own byte form, ``sluice.transform.accumulators``) and emits the window's one row when
the arrival-time watermark passes ``window_end + allowed_lateness`` (an event-time timer): no
arriving event can change the window after that (``sluice.stream.stages.window_batch``).
Dead letters: every rejected record, with its reason, from the stages; and here, a partial that
reaches a window already written (a re-driven event of an old window, or records more out of order
than the watermark allows): ``too_late`` at stage ``window``, never dropped.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import (
    FlatMapFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from flink_jobs.app.rows import (
    EVENT_TABLES,
    dead_letter_row,
    event_row,
    row_type,
    window_row,
)
from sluice.core.contracts import ErrorType, Source, Stage
from sluice.core.deadletters import dead_letter
from sluice.stream.kpl import deaggregate
from sluice.stream.stages import Event, InputRecord, JobBatch

__all__ = [
    "KINESIS_RECORD",
    "PARTIAL",
    "ROUTED",
    "USER_RECORD",
    "DeaggregateRecords",
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


class DeaggregateRecords(FlatMapFunction):  # type: ignore[misc]
    """A Kinesis record -> its user records, numbered by their place in the aggregate."""

    def flat_map(self, value: Row) -> Any:
        shard, sequence, arrival_millis, data = value[0], value[1], value[2], value[3]
        for sub, user in enumerate(deaggregate(bytes(data), "")):
            yield Row(shard, sequence, sub, arrival_millis / 1000.0, user.data)


class RunStages(KeyedProcessFunction):  # type: ignore[misc]
    """A shard's user records, batched in keyed state, through every core stage."""

    def __init__(
        self, settings: Any, max_records: int, max_millis: int, *, deduplicate: bool = False
    ) -> None:
        self.settings = settings
        self.deduplicate = deduplicate
        self.max_records = max_records
        self.max_millis = max_millis
        self.runner: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        from sluice.stream.run import StageRunner

        self.tags = table_tags()
        self.runner = StageRunner(self.settings)
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffer", USER_RECORD))
        self.size = runtime_context.get_state(ValueStateDescriptor("size", Types.INT()))
        # The archive's files may overlap (a job restarted before committing archived a range
        # twice): positions seen, per shard, for the replay's length (as `sluice replay` keeps).
        self.seen = runtime_context.get_map_state(
            MapStateDescriptor("seen", Types.STRING(), Types.BOOLEAN())
        )
        self.window_millis = self.settings.window_seconds * 1000
        self.lateness_millis = self.settings.allowed_lateness_seconds * 1000

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        if self.deduplicate:
            position = f"{value[1]}:{value[2]}"
            if self.seen.contains(position):
                return
            self.seen.put(position, True)
        self.buffer.add(value)
        size = (self.size.value() or 0) + 1
        if size >= self.max_records:
            self.size.clear()
            yield from self._flush(ctx.get_current_key())
            return
        self.size.update(size)
        if size == 1:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(int(time.time() * 1000) + self.max_millis)
            timers.register_event_time_timer(int(value[3] * 1000))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        if self.size.value():
            self.size.clear()
            yield from self._flush(ctx.get_current_key())

    def _flush(self, shard: str) -> Any:
        # Fields by position: rows made in Python carry no field names.
        rows = sorted(self.buffer.get(), key=lambda r: (int(r[1]), r[2]))
        self.buffer.clear()
        records: list[InputRecord] = []
        seen: set[tuple[int, int]] = set()
        for row in rows:  # a position is one record
            position = (int(row[1]), row[2])
            if position not in seen:
                seen.add(position)
                records.append(InputRecord(position[0], position[1], row[3], bytes(row[4])))
        batch = self.runner.run(shard, records)
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


class MergeWindows(KeyedProcessFunction):  # type: ignore[misc]
    """One window key's partials merged in keyed state; its row emitted once, when it closes."""

    def __init__(self, table: str, window_seconds: int) -> None:
        self.table = table
        self.window_seconds = window_seconds

    def open(self, runtime_context: RuntimeContext) -> None:
        from sluice.transform.accumulators import MetricStats, WebTrafficStats

        self.accumulator = MetricStats if self.table == "iot_metrics_1m" else WebTrafficStats
        self.state = runtime_context.get_state(
            ValueStateDescriptor("state", Types.PRIMITIVE_ARRAY(Types.BYTE()))
        )

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        close_millis, state = value[1], value[2]
        if close_millis <= ctx.timer_service().current_watermark():
            yield "dead_letters", dead_letter_row(self._too_late(value))
            return
        partial = self.accumulator.from_bytes(bytes(state))
        stored = self.state.value()
        if stored is None:
            ctx.timer_service().register_event_time_timer(close_millis)
            merged = partial
        else:
            merged = self.accumulator.from_bytes(bytes(stored)).merge(partial)  # type: ignore[arg-type]
        self.state.update(merged.to_bytes())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        stored = self.state.value()
        if stored is None:
            return
        self.state.clear()
        *group, start_micros = orjson.loads(ctx.get_current_key())
        stats = self.accumulator.from_bytes(bytes(stored))
        yield (
            self.table,
            window_row(
                self.table, tuple(group), _from_micros(start_micros), stats, self.window_seconds
            ),
        )

    def _too_late(self, value: Row) -> Event:
        key, state = value[0], base64.b64encode(bytes(value[2])).decode()
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
