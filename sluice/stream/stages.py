"""The stream job's stages as plain functions over batches, shared by every engine.

In: a batch of user records read from one Kinesis shard (``InputRecord``: position, arrival time,
bytes of one ``Envelope``), as the Beam source or a PyFlink function produces them.
Out: a ``JobBatch`` (an immutable value) that each stage below returns anew and the table writer
commits:

``decode_batch`` -> ``enrich_batch`` -> ``filter_batch`` -> ``window_batch`` -> (``sluice.tables.warehouse``)

A batch never loses its identity (shard and sequence range): the writer needs it to commit source
positions atomically with the rows they produced (exactly-once).

Dead letters: an undecodable envelope (``invalid_json``, ``schema_violation``), a payload its contract
refuses, an edge's dead letter passing through, an event that arrived after its window closed
(``too_late``), and an event whose window cannot be computed or stored (``invalid_timestamp``: its
window would end after 9999-12-31, the last instant a table can hold; ``schema_violation``: the
aggregation refused its values). Job-made dead letters take the record's position as identity and
its arrival time as ``first_seen``, so a replay produces the very same dead letters.

One record never fails a batch: anything a stage did not foresee about a single record (an
exception from the decoder, the contract or the aggregation) becomes that record's dead letter,
because a failed batch would fail again on every restart and hold back everything after it. The
table writer defends the same way when a record cannot become a row (``sluice.tables.warehouse``).

Lateness is decided by arrival time, not by a runner's watermark: an event is too late when Kinesis
received it (``ApproximateArrivalTimestamp``) more than ``allowed_lateness`` after its window ended.
That rule depends only on the record, so an interrupted and an uninterrupted run decide alike.
One exception: a re-driven event (its envelope's ``redrive_of`` is set, see ``sluice.tables.redrive``) is
never too late. It is a deliberate late fix of an input that was dead-lettered, usually long after
its window closed; windows keep their mergeable state in their table, so it is merged into its
(old) window like any late event. ``Event.redrive_of`` carries the field to the table writer, which
lands an event id (re-driven or not) at most once (``sluice.tables.warehouse``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel, TypeAdapter, ValidationError

from sluice.core.contracts import (
    DEFAULT_HORIZON,
    MAX_FUTURE_SECONDS_LIMIT,
    DeadLetter,
    Envelope,
    ErrorType,
    FeedItem,
    IotReading,
    Source,
    Stage,
    TimeHorizon,
    WebAccessLog,
)
from sluice.core.deadletters import dead_letter, describe_validation_error
from sluice.core.errors import RecordRejected
from sluice.core.inputs import decode_json
from sluice.stream.envelopes import claimed_origin, decoded_envelope
from sluice.transform.accumulators import MetricStats, WebTrafficStats
from sluice.transform.aggregate import IotKey, WebKey, aggregate_iot, aggregate_web, window_start
from sluice.transform.filters import RecordFilter

__all__ = [
    "RECORD_LISTS",
    "Event",
    "InputRecord",
    "JobBatch",
    "decode_batch",
    "describe_exception",
    "enrich_batch",
    "event_dead_letter",
    "filter_batch",
    "window_batch",
]

CONTRACTS: dict[Source, type[BaseModel]] = {
    Source.IOT: IotReading,
    Source.WEBLOG: WebAccessLog,
    Source.FEED: FeedItem,
}


class InputRecord(NamedTuple):
    """One user record of the stream (a KPL aggregate's records share ``sequence``).

    A named tuple, as ``Event`` is: immutable, and made in 0.7 us where a frozen dataclass of
    these fields takes 1.2 (measured), which a job pays twice for every record."""

    sequence: int
    sub_sequence: int
    arrival: float
    """Kinesis ``ApproximateArrivalTimestamp``, epoch seconds."""
    data: bytes


class Event(NamedTuple):
    """A record on its way to a table, with where it came from (a value: stages make new ones).

    A named tuple: immutable, and made in 1.0 us where a frozen dataclass of these fields takes
    2.5 (measured); a job makes one per event."""

    sequence: int
    sub_sequence: int
    arrival: float
    event_id: str
    ingest_time: datetime
    record: Any
    redrive_of: str | None = None
    """The dead letter this event re-drives (the envelope's ``redrive_of``); ``None`` normally."""
    correlation_id: str | None = None
    """The edge request that brought it in (the envelope's ``correlation_id``), when known."""

    def with_record(self, record: Any) -> Event:
        """This event carrying ``record`` instead (an enriched or flagged copy)."""
        return Event(self.sequence, self.sub_sequence, self.arrival, self.event_id,
                     self.ingest_time, record, self.redrive_of, self.correlation_id)  # fmt: skip


Counts = Mapping[str, int]


@dataclass(frozen=True, slots=True)
class JobBatch:
    """One shard's batch through the stages: events per source, dead letters, partial aggregates.

    A value: every stage returns a new batch and leaves the one it was given as it was (Beam
    forbids changing an element, and a second branch off a stage must see what the first saw).
    Its mappings and tuples are never changed after construction; build a changed copy with
    ``dataclasses.replace``.
    """

    shard_id: str
    first_sequence: int
    last_sequence: int
    previous_sequence: int | None
    max_arrival: float
    events: Mapping[Source, tuple[Event, ...]] = field(default_factory=dict)
    dead_letters: tuple[Event, ...] = ()
    iot_windows: Mapping[IotKey, MetricStats] = field(default_factory=dict)
    web_windows: Mapping[WebKey, WebTrafficStats] = field(default_factory=dict)
    stage_counters: Mapping[Stage, Counts] = field(default_factory=dict)
    """Per stage that ran, the counters it made (``parse.received``, ``dead_lettered.<reason>``,
    ...): read by the engine's metrics (``beam_jobs.pipeline``), never removed."""
    redriven: int = 0
    """How many decoded events are re-driven ones (the writer de-duplicates them even when its
    general de-duplication is off)."""

    @property
    def counters(self) -> dict[str, int]:
        """Every stage's counters summed by name."""
        total: dict[str, int] = {}
        for counts in self.stage_counters.values():
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n
        return total


class _Tally:
    """The counters and dead letters one stage makes while it builds its new batch."""

    __slots__ = ("counts", "letters")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.letters: list[Event] = []

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def letter(self, sequence: int, sub_sequence: int, arrival: float, letter: DeadLetter) -> None:
        self.letters.append(
            Event(sequence, sub_sequence, arrival, letter.dead_letter_id, letter.first_seen, letter)
        )
        self.count(f"dead_lettered.{letter.error_type.value}")

    def letter_event(self, event: Event, letter: DeadLetter) -> None:
        self.letter(event.sequence, event.sub_sequence, event.arrival, letter)

    def counters_after(self, batch: JobBatch | None, stage: Stage) -> dict[Stage, Counts]:
        """The stage counters of ``batch`` plus this stage's (added to an earlier run's, if any)."""
        before = dict(batch.stage_counters) if batch is not None else {}
        mine = dict(before.get(stage, {}))
        for name, n in self.counts.items():
            mine[name] = mine.get(name, 0) + n
        before[stage] = mine
        return before

    def dead_letters_after(self, batch: JobBatch) -> tuple[Event, ...]:
        return (*batch.dead_letters, *self.letters) if self.letters else batch.dead_letters


def _arrival_time(arrival: float) -> datetime:
    return datetime.fromtimestamp(arrival, UTC)


def describe_exception(err: BaseException) -> str:
    """One line for a dead letter made from an exception no stage expected: its type and first
    line, with characters a table cannot store (lone surrogates) escaped."""
    text = str(err).splitlines()[0] if str(err) else ""
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


RECORD_LISTS: dict[Source, TypeAdapter[list[Any]]] = {
    source: TypeAdapter(list[contract])  # type: ignore[valid-type]
    for source, contract in CONTRACTS.items()
}
_FAR_REFERENCE = datetime(9000, 1, 1, tzinfo=UTC)


def decode_batch(
    shard_id: str,
    records: Sequence[InputRecord],
    *,
    previous_sequence: int | None = None,
    stage: Stage = Stage.PARSE,
    horizon: TimeHorizon = DEFAULT_HORIZON,
) -> JobBatch:
    """Decode envelopes and validate each payload against its source's contract.

    Event times outside ``horizon`` around the record's arrival are ``invalid_timestamp`` (arrival,
    not the clock, so a replay decides alike).

    Fast path, for the common case: envelopes read by plain checks (``decoded_envelope``), each
    source's payloads validated in one call (``TypeAdapter``, in Rust) under a horizon with the
    batch's lower bound and no upper one, then each event time compared with its record's upper
    bound. Every record that fails any of that (bad JSON, an edge's dead letter, a schema
    violation, an event time out of the horizon, an unusual envelope form) is decoded alone by
    the contracts (``_decode_one``), so its dead letter is exactly what that gives; what the fast
    path accepts, the contracts accept with the same values.
    """
    tally = _Tally()
    tally.count("parse.received", len(records))
    decided: list[Event | DeadLetter | None] = [None] * len(records)
    envelopes = [decoded_envelope(record.data) for record in records]
    waiting: dict[Source, list[int]] = {}
    for index, envelope in enumerate(envelopes):
        if envelope is not None:
            waiting.setdefault(envelope.source, []).append(index)
    open_above = TimeHorizon(MAX_FUTURE_SECONDS_LIMIT, horizon.min_event_time).context(
        _FAR_REFERENCE
    )
    ahead = timedelta(seconds=horizon.max_future_seconds)
    latest: dict[float, datetime] = {}
    for source, indexes in waiting.items():
        payloads = [envelopes[i].payload for i in indexes]  # type: ignore[union-attr]
        for index, payload in _validate_all(RECORD_LISTS[source], payloads, indexes, open_above):
            record = records[index]
            bound = latest.get(record.arrival)
            if bound is None:
                bound = latest[record.arrival] = _arrival_time(record.arrival) + ahead
            updated = payload.updated_time if source is Source.FEED else None
            if payload.event_time > bound or (updated is not None and updated > bound):
                continue  # out of the horizon: the contract's own message, below
            envelope = envelopes[index]
            assert envelope is not None
            decided[index] = Event(record.sequence, record.sub_sequence, record.arrival,
                                   envelope.event_id, envelope.ingest_time, payload,
                                   envelope.redrive_of, envelope.correlation_id)  # fmt: skip
    events: dict[Source, list[Event]] = {source: [] for source in Source}
    redriven = 0
    for index, record in enumerate(records):
        outcome = decided[index]
        if outcome is None:
            outcome = _decode_one(shard_id, record, stage, horizon)
        if isinstance(outcome, DeadLetter):
            tally.letter(record.sequence, record.sub_sequence, record.arrival, outcome)
            continue
        events[_source_of(outcome)].append(outcome)
        redriven += outcome.redrive_of is not None
    tally.count("parse.emitted", sum(len(v) for v in events.values()))
    return JobBatch(
        shard_id=shard_id,
        first_sequence=records[0].sequence if records else -1,
        last_sequence=records[-1].sequence if records else -1,
        previous_sequence=previous_sequence,
        max_arrival=max((r.arrival for r in records), default=0.0),
        events={source: tuple(found) for source, found in events.items()},
        dead_letters=tuple(tally.letters),
        stage_counters=tally.counters_after(None, Stage.PARSE),
        redriven=redriven,
    )


_SOURCE_OF_CONTRACT = {contract: source for source, contract in CONTRACTS.items()}


def _source_of(event: Event) -> Source:
    return _SOURCE_OF_CONTRACT[type(event.record)]


def _validate_all(
    adapter: TypeAdapter[list[Any]],
    payloads: list[Any],
    indexes: list[int],
    context: dict[str, Any],
) -> list[tuple[int, Any]]:
    """The payloads that validate, with their record indexes (one call for all of them; the
    failing ones are left out, to be decoded alone)."""
    while payloads:
        try:
            return list(zip(indexes, adapter.validate_python(payloads, context=context),
                            strict=True))  # fmt: skip
        except ValidationError as err:
            bad = {e["loc"][0] for e in err.errors(include_url=False) if e["loc"]}
            if not bad:
                return []
        except Exception:  # noqa: BLE001 - whatever it was, each record is decoded alone
            return []
        payloads = [p for i, p in enumerate(payloads) if i not in bad]
        indexes = [x for i, x in enumerate(indexes) if i not in bad]
    return []


def _decode_one(
    shard_id: str, record: InputRecord, stage: Stage, horizon: TimeHorizon
) -> Event | DeadLetter:
    """One record by the contracts: its event, or its dead letter (an edge's, or why it is one)."""
    try:
        envelope = Envelope.model_validate(decode_json(record.data))
        if envelope.kind == "dead_letter":
            letter = DeadLetter.model_validate(envelope.payload)
            if letter.correlation_id is None and envelope.correlation_id is not None:
                letter = letter.model_copy(update={"correlation_id": envelope.correlation_id})
            return letter
        payload = CONTRACTS[envelope.source].model_validate(
            envelope.payload, context=horizon.context(_arrival_time(record.arrival))
        )
    except RecordRejected as rejected:
        error_type, message = rejected.error_type, rejected.message
    except ValidationError as err:
        error_type, message = describe_validation_error(err)
    except Exception as err:  # noqa: BLE001 - one record must never fail its batch (see above)
        error_type, message = ErrorType.SCHEMA_VIOLATION, describe_exception(err)
    else:
        return Event(record.sequence, record.sub_sequence, record.arrival, envelope.event_id,
                     envelope.ingest_time, payload, envelope.redrive_of,
                     envelope.correlation_id)  # fmt: skip
    source, correlation = claimed_origin(record.data)
    return dead_letter(source, stage, error_type, message, record.data,
                       identity=(shard_id, record.sequence, record.sub_sequence),
                       first_seen=_arrival_time(record.arrival),
                       correlation_id=correlation)  # fmt: skip


def enrich_batch(batch: JobBatch, enricher: Any) -> JobBatch:
    """Add GeoIP data to web requests (``enricher``: a ``sluice.transform.geoip.GeoIpEnricher``,
    whose ``enrich`` looks each distinct address of the batch up once)."""
    web = batch.events.get(Source.WEBLOG, ())
    tally = _Tally()
    tally.count("enrich.received", len(web))
    records = enricher.enrich([event.record for event in web])
    enriched = tuple(event.with_record(record) for event, record in zip(web, records, strict=True))
    tally.count("enrich.emitted", len(enriched))
    return replace(
        batch,
        events={**batch.events, Source.WEBLOG: enriched},
        stage_counters=tally.counters_after(batch, Stage.ENRICH),
    )


def filter_batch(batch: JobBatch, filters: Mapping[Source, RecordFilter]) -> JobBatch:
    """Apply each source's filter rules; drops are counted per rule, flags set on the records.

    A record a rule cannot be applied to (an exception while judging it) becomes a
    ``schema_violation`` dead letter of the filter stage; the others go on.
    """
    tally = _Tally()
    events = dict(batch.events)
    for source, record_filter in filters.items():
        found = batch.events.get(source, ())
        tally.count("filter.received", len(found))
        if not record_filter or not found:
            tally.count("filter.emitted", len(found))
            continue
        kept: list[Event] = []
        for event in found:
            try:
                dropped_by, flags = record_filter.judge(event.record)
            except Exception as err:  # noqa: BLE001 - one record must never fail its batch
                tally.letter_event(event, event_dead_letter(
                    batch.shard_id, source, event, Stage.FILTER, ErrorType.SCHEMA_VIOLATION,
                    f"filter rules cannot judge it: {describe_exception(err)}"))  # fmt: skip
                continue
            if dropped_by is not None:
                tally.count(f"filter.dropped.{dropped_by}")
                continue
            if flags:
                event = event.with_record(
                    event.record.model_copy(update={"flags": [*event.record.flags, *flags]})
                )
            kept.append(event)
        events[source] = tuple(kept)
        tally.count("filter.emitted", len(kept))
    return replace(
        batch,
        events=events,
        dead_letters=tally.dead_letters_after(batch),
        stage_counters=tally.counters_after(batch, Stage.FILTER),
    )


WINDOWED_SOURCES = (Source.IOT, Source.WEBLOG)
LAST_STORABLE = datetime.max.replace(tzinfo=UTC)
"""The last instant a Python datetime, and so a table row built from one, can hold."""
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def window_end(event_time: datetime, size_seconds: int) -> float:
    start = event_time.timestamp() // size_seconds * size_seconds
    return start + size_seconds


def window_problem(event_time: datetime, size_seconds: int) -> str | None:
    """Why the window of ``event_time`` cannot be stored (its start and end must be datetimes), or None."""
    try:
        start = window_start(event_time, size_seconds)
        start + timedelta(seconds=size_seconds)
    except (OverflowError, ValueError, OSError):
        return (
            f"event time {event_time.isoformat()}: its {size_seconds} s window would end after "
            f"{LAST_STORABLE.isoformat()}, the last time a table can hold"
        )
    return None


def _surely_storable(size_seconds: int) -> tuple[datetime, datetime]:
    """Event times from the first to the second of these have a storable window (``window_problem``
    is None for them: a day of margin each side), so a batch checks most events by two comparisons;
    an empty range (first after second) for a window size too large to leave any such time."""
    try:
        margin = timedelta(seconds=size_seconds, days=1)
        return _EARLIEST + margin, LAST_STORABLE - margin
    except OverflowError:
        return LAST_STORABLE, _EARLIEST


def event_dead_letter(
    shard_id: str, source: Source, event: Event, stage: Stage, error_type: ErrorType, message: str
) -> DeadLetter:
    """A dead letter for a decoded event: the whole envelope as raw input, so it can be re-driven."""
    try:
        payload = event.record.model_dump(mode="json")
    except Exception as err:  # noqa: BLE001 - the letter must be made whatever the record holds
        payload = {"unserializable": describe_exception(err)}
    more = {} if event.redrive_of is None else {"redrive_of": event.redrive_of}
    if event.correlation_id is not None:
        more["correlation_id"] = event.correlation_id
    envelope = Envelope(source=source, event_id=event.event_id, ingest_time=event.ingest_time,
                        partition_key=event.event_id, payload=payload, **more)  # fmt: skip
    try:
        raw = envelope.model_dump_json()
    except Exception:  # noqa: BLE001 - text JSON cannot hold (lone surrogates): escape it
        raw = json.dumps(envelope.model_dump(mode="json"), ensure_ascii=True, default=str)
    return dead_letter(
        source, stage, error_type, message, raw, event_time=event.record.event_time,
        first_seen=_arrival_time(event.arrival),
        identity=(shard_id, event.sequence, event.sub_sequence),
        correlation_id=event.correlation_id,
    )  # fmt: skip


def window_batch(
    batch: JobBatch,
    size_seconds: int,
    allowed_lateness_seconds: int,
    *,
    stage: Stage = Stage.WINDOW,
) -> JobBatch:
    """Divert events that arrived after their window closed, then pre-aggregate the rest per window.

    Sources with window tables (IoT, web logs) are checked, so their event and window tables agree
    on what was on time. Feed items are not windowed: a feed lists items of the past hour or week by
    design, so they are never too late. Nor are re-driven events (``Event.redrive_of`` set): they
    are merged into their window whatever its age (see the module docstring). An event whose window
    cannot be stored (``window_problem``) or aggregated becomes a dead letter instead.
    """
    tally = _Tally()
    events = dict(batch.events)
    low, high = _surely_storable(size_seconds)
    for source in WINDOWED_SOURCES:
        on_time: list[Event] = []
        for event in batch.events.get(source, ()):
            event_time = event.record.event_time
            try:
                sure = low <= event_time <= high
            except TypeError:  # a naive time, which window_problem reads as UTC
                sure = False
            problem = None if sure else window_problem(event_time, size_seconds)
            if problem is not None:
                tally.letter_event(event, event_dead_letter(
                    batch.shard_id, source, event, stage, ErrorType.INVALID_TIMESTAMP, problem))  # fmt: skip
                continue
            closes = window_end(event_time, size_seconds) + allowed_lateness_seconds
            if event.arrival <= closes or event.redrive_of is not None:
                on_time.append(event)
                continue
            late_by = event.arrival - closes
            tally.letter_event(event, event_dead_letter(
                batch.shard_id, source, event, stage, ErrorType.TOO_LATE,
                f"arrived {late_by:.0f} s after its window closed (lateness {allowed_lateness_seconds} s)",
            ))  # fmt: skip
        events[source] = tuple(on_time)
    iot_windows = _aggregate(batch.shard_id, events, tally, Source.IOT, aggregate_iot,
                             size_seconds, stage)  # fmt: skip
    web_windows = _aggregate(batch.shard_id, events, tally, Source.WEBLOG, aggregate_web,
                             size_seconds, stage)  # fmt: skip
    tally.count("window.emitted", len(iot_windows) + len(web_windows))
    return replace(
        batch,
        events=events,
        dead_letters=tally.dead_letters_after(batch),
        iot_windows=iot_windows,
        web_windows=web_windows,
        stage_counters=tally.counters_after(batch, Stage.WINDOW),
    )


def _aggregate(
    shard_id: str,
    events: dict[Source, tuple[Event, ...]],
    tally: _Tally,
    source: Source,
    aggregate: Any,
    size_seconds: int,
    stage: Stage,
) -> dict[Any, Any]:
    """``aggregate`` over the source's events; if it fails, the events it fails on become dead
    letters (each is tried alone; ``events`` then holds the rest) and the rest are aggregated."""
    found = events.get(source, ())
    try:
        result: dict[Any, Any] = aggregate((e.record for e in found), size_seconds)
        return result
    except Exception:  # noqa: BLE001, S110 - isolate the records at fault below
        pass
    kept: list[Event] = []
    for event in found:
        try:
            aggregate([event.record], size_seconds)
        except Exception as err:  # noqa: BLE001 - this record's dead letter
            tally.letter_event(event, event_dead_letter(
                shard_id, source, event, stage, ErrorType.SCHEMA_VIOLATION,
                f"cannot be aggregated: {describe_exception(err)}"))  # fmt: skip
            continue
        kept.append(event)
    events[source] = tuple(kept)
    result = aggregate((e.record for e in kept), size_seconds)
    return result
