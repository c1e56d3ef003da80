"""The Sluice stream job: Kinesis to Iceberg, one composite transform per stage, top to bottom.

    ReadFromKinesis -> ArchiveRawRecords -> ParseAndValidate -> EnrichWithGeoIp -> ApplyFilters
                    -> WindowAndAggregate -> WriteToIceberg

``ArchiveRawRecords`` keeps every record read (``sluice.tables.archive``) so ``sluice replay`` can run the
same stages again in batch mode over a time range (``beam_jobs.replay``).

Elements are batches (one per GetRecords call per shard), never single records: Python's overhead is
per element, so every stage does its work per batch through the core functions of ``sluice.stream.stages``.
Dead letters of every stage ride inside their batch to ``WriteToIceberg``, which writes them to the
``dead_letters`` table: one sink for all of them, committed with the same positions as the data.

Exactly-once: see ``sluice.tables.warehouse``. The job resumes each shard after the smallest position its
tables hold, so it can be killed at any moment (SIGKILL included) and started again. At start it
claims the tables (``sluice.tables.ownership``: a new epoch, the stream's identity), so an older job
still running on the same tables is fenced at its next commit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlparse

import apache_beam as beam

from beam_jobs.coders import register_coders
from beam_jobs.metrics import StageCounters
from beam_jobs.read_kinesis import ReadFromKinesis
from beam_jobs.settings import JobSettings
from sluice.core.config import CoreSettings
from sluice.core.contracts import DEFAULT_HORIZON, ErrorType, Source, Stage, TimeHorizon
from sluice.stream.kinesis.positions import StartPosition
from sluice.stream.kinesis.records import SourceBatch
from sluice.stream.stages import (
    InputRecord,
    JobBatch,
    decode_batch,
    enrich_batch,
    filter_batch,
    window_batch,
)
from sluice.tables.archive import encode_batch
from sluice.tables.ownership import Owner, StreamIdentity, claim_tables
from sluice.tables.warehouse import (
    DEFAULT_MAX_BUFFERED_RECORDS,
    DEFAULT_POSITIONS_COMMIT_SECONDS,
    ExactlyOnceWriter,
    WarehouseSettings,
    batch_records,
    ensure_tables,
    first_start,
    open_catalog,
)
from sluice.transform.filters import RecordFilter

__all__ = [
    "ApplyFilters",
    "EnrichWithGeoIp",
    "JobStart",
    "ParseAndValidate",
    "WindowAndAggregate",
    "WriteToIceberg",
    "build",
    "claim_start",
    "local_root",
    "process",
    "start_position",
]

LOG = logging.getLogger("sluice.job")
register_coders()  # elements travel with explicit coders, not pickled (see beam_jobs.coders)


def _report(batch: JobBatch, stage: Stage) -> None:
    """Report the counters ``stage`` made on ``batch`` (its dead letters included) as Beam metrics.

    Reads them only: the batch is an element, which Beam forbids changing."""
    counters = StageCounters(stage)
    for name, value in batch.stage_counters.get(stage, {}).items():
        if name.startswith("dead_lettered."):
            counters.dead_lettered(name.removeprefix("dead_lettered."), value)
        elif name.endswith(".received"):
            counters.received(value)
        elif name.endswith(".emitted"):
            counters.emitted(value)
        else:
            counters.count(name.removeprefix(f"{stage}."), value)


def source_records(batch: SourceBatch) -> list[InputRecord]:
    return [
        InputRecord(int(r.sequence_number), r.sub_sequence, r.arrival, r.data)
        for r in batch.records
    ]


def local_root(warehouse_uri: str) -> str | None:
    """The folder of a file:// warehouse; None for any other (s3://: Firehose archives there)."""
    parsed = urlparse(warehouse_uri)
    return unquote(parsed.path) if parsed.scheme == "file" else None


class _Archive(beam.DoFn):
    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root

    def process(self, batch: SourceBatch) -> Iterator[SourceBatch]:
        for relative, content in encode_batch(batch.shard_id, source_records(batch)):
            path = os.path.join(self.root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # Same shard and range, same name and bytes: a re-read after a restart rewrites it.
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "wb") as out:
                out.write(content)
            os.replace(temporary, path)
        yield batch


class ArchiveRawRecords(
    beam.PTransform[beam.pvalue.PCollection[SourceBatch], beam.pvalue.PCollection[SourceBatch]]
):
    """Write each batch's raw records to ``<warehouse>/raw/...`` (``sluice.tables.archive``), pass it on.

    Only for a file:// warehouse; on AWS (s3://) Kinesis Data Firehose archives the stream into the
    same layout, and this stage passes batches through.
    """

    def __init__(self, warehouse_uri: str) -> None:
        super().__init__()
        self.root = local_root(warehouse_uri)

    def expand(
        self, batches: beam.pvalue.PCollection[SourceBatch]
    ) -> beam.pvalue.PCollection[SourceBatch]:
        if self.root is None:
            LOG.info("not archiving raw records: Kinesis Data Firehose archives them in production")
            return batches
        return batches | "WriteRawFiles" >> beam.ParDo(_Archive(self.root)).with_output_types(
            SourceBatch
        )


class _Parse(beam.DoFn):
    def __init__(self, horizon: TimeHorizon = DEFAULT_HORIZON) -> None:
        super().__init__()
        self.horizon = horizon

    def process(self, batch: SourceBatch) -> Iterator[JobBatch]:
        records = source_records(batch)
        previous = int(batch.previous_sequence) if batch.previous_sequence is not None else None
        parsed = decode_batch(
            batch.shard_id, records, previous_sequence=previous, horizon=self.horizon
        )
        _report(parsed, Stage.PARSE)
        yield parsed


class ParseAndValidate(
    beam.PTransform[beam.pvalue.PCollection[SourceBatch], beam.pvalue.PCollection[JobBatch]]
):
    """Source batches -> job batches: envelopes decoded, payloads validated against the contracts
    (event times within ``horizon`` of their arrival)."""

    def __init__(self, horizon: TimeHorizon = DEFAULT_HORIZON) -> None:
        super().__init__()
        self.horizon = horizon

    def expand(
        self, batches: beam.pvalue.PCollection[SourceBatch]
    ) -> beam.pvalue.PCollection[JobBatch]:
        return batches | "DecodeEnvelopes" >> beam.ParDo(_Parse(self.horizon)).with_output_types(
            JobBatch
        )


class _Enrich(beam.DoFn):
    def __init__(self, city_db: str | None, asn_db: str | None, cache_size: int) -> None:
        super().__init__()
        self.city_db, self.asn_db, self.cache_size = city_db, asn_db, cache_size
        self.enricher: Any = None

    def setup(self) -> None:
        if self.city_db:
            from sluice.transform.geoip import GeoIpEnricher

            self.enricher = GeoIpEnricher(self.city_db, self.asn_db, self.cache_size)

    def process(self, batch: JobBatch) -> Iterator[JobBatch]:
        if self.enricher is not None:
            batch = enrich_batch(batch, self.enricher)
            _report(batch, Stage.ENRICH)
        yield batch

    def teardown(self) -> None:
        if self.enricher is not None:
            self.enricher.close()


class EnrichWithGeoIp(
    beam.PTransform[beam.pvalue.PCollection[JobBatch], beam.pvalue.PCollection[JobBatch]]
):
    """Web requests get country, city, position and ASN; without a database this stage passes through."""

    def __init__(self, city_db: str | None, asn_db: str | None, cache_size: int = 65_536) -> None:
        super().__init__()
        self.city_db, self.asn_db, self.cache_size = city_db, asn_db, cache_size

    def expand(
        self, batches: beam.pvalue.PCollection[JobBatch]
    ) -> beam.pvalue.PCollection[JobBatch]:
        return batches | "LookUpClients" >> beam.ParDo(
            _Enrich(self.city_db, self.asn_db, self.cache_size)
        ).with_output_types(JobBatch)


class _Filter(beam.DoFn):
    def __init__(self, settings: CoreSettings) -> None:
        super().__init__()
        self.rules = settings.filter_rules

    def setup(self) -> None:
        self.filters = {source: RecordFilter(self.rules, source.value) for source in Source}

    def process(self, batch: JobBatch) -> Iterator[JobBatch]:
        filtered = filter_batch(batch, self.filters)
        _report(filtered, Stage.FILTER)
        yield filtered


class ApplyFilters(
    beam.PTransform[beam.pvalue.PCollection[JobBatch], beam.pvalue.PCollection[JobBatch]]
):
    """Drop and flag records by the configured rules (``SLUICE_FILTER_RULES``)."""

    def __init__(self, settings: CoreSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(
        self, batches: beam.pvalue.PCollection[JobBatch]
    ) -> beam.pvalue.PCollection[JobBatch]:
        return batches | "ApplyRules" >> beam.ParDo(_Filter(self.settings)).with_output_types(
            JobBatch
        )


class _Window(beam.DoFn):
    def __init__(self, size_seconds: int, lateness_seconds: int) -> None:
        super().__init__()
        self.size_seconds, self.lateness_seconds = size_seconds, lateness_seconds

    def process(self, batch: JobBatch) -> Iterator[JobBatch]:
        windowed = window_batch(batch, self.size_seconds, self.lateness_seconds)
        _report(windowed, Stage.WINDOW)
        yield windowed


class WindowAndAggregate(
    beam.PTransform[beam.pvalue.PCollection[JobBatch], beam.pvalue.PCollection[JobBatch]]
):
    """Assign tumbling event-time windows, divert too-late events, pre-aggregate each batch per window.

    Lateness is judged by arrival time (see ``sluice.stream.stages``); the partial aggregates are merged into
    the stored window state by ``WriteToIceberg``, so a window survives restarts and late data.
    """

    def __init__(self, size_seconds: int, lateness_seconds: int) -> None:
        super().__init__()
        self.size_seconds, self.lateness_seconds = size_seconds, lateness_seconds

    def expand(
        self, batches: beam.pvalue.PCollection[JobBatch]
    ) -> beam.pvalue.PCollection[JobBatch]:
        return batches | "PreAggregate" >> beam.ParDo(
            _Window(self.size_seconds, self.lateness_seconds)
        ).with_output_types(JobBatch)


class _Commit(beam.DoFn):
    """Buffers the batches of a bundle and commits them when the bundle finishes.

    The source makes each bundle last the commit interval (``bundle_seconds``), so there is one
    commit per interval to each table that got something; nothing is held across bundles, so a
    bundle that dies is simply read again after the restart (its positions were never committed).
    A bundle that would buffer more than ``max_buffered_records`` (a backlog drains far faster
    than an interval) commits what it holds before the batch that would pass the bound, and goes
    on: memory stays bounded, and the commit is like one at a bundle's end (the positions it
    records cover exactly the rows it wrote).
    At a clean stop (``teardown``) every table records the positions it reached.
    """

    def __init__(
        self,
        warehouse: WarehouseSettings,
        window_seconds: int,
        positions_commit_seconds: float,
        owner: Owner | None,
        max_buffered_records: int = DEFAULT_MAX_BUFFERED_RECORDS,
    ) -> None:
        super().__init__()
        self.warehouse, self.window_seconds = warehouse, window_seconds
        self.positions_commit_seconds = positions_commit_seconds
        self.owner = owner
        self.max_buffered_records = max_buffered_records

    def setup(self) -> None:
        catalog = open_catalog(self.warehouse)
        self.writer = ExactlyOnceWriter(
            ensure_tables(catalog, self.warehouse),
            self.window_seconds,
            positions_commit_seconds=self.positions_commit_seconds,
            owner=self.owner,
        )
        self.counters = StageCounters(Stage.WRITE)
        self.totals: dict[str, int] = {}

    def process(self, batch: JobBatch) -> None:
        # Bounds memory while a backlog drains (see JobSettings): commit what is buffered before a
        # batch that would take it past the bound, so it never holds more (a single batch larger
        # than the bound is committed alone).
        pending = self.writer.pending_records
        if pending and pending + batch_records(batch) > self.max_buffered_records:
            self._commit()
        self.writer.add(batch)
        if self.writer.pending_records >= self.max_buffered_records:
            self._commit()

    def finish_bundle(self) -> None:
        self._commit()

    def _commit(self) -> None:
        report = self.writer.flush()
        if report.held_back:
            # Within a bundle the source emits each shard's batches in order; a gap means a batch
            # was lost upstream, and committing past it would lose it for good.
            raise RuntimeError(f"{report.held_back} batches do not follow their shard's last batch")
        for table, rows in report.rows.items():
            self.counters.count(f"rows_{table}", rows)
            self.totals[table] = self.totals.get(table, 0) + rows
        if report.duplicates:
            self.counters.count("duplicates", report.duplicates)
        if report.conflicts:
            self.counters.count("conflicts", report.conflicts)
        if report.dead_lettered:
            self.counters.dead_lettered(ErrorType.SCHEMA_VIOLATION.value, report.dead_lettered)
        if report.rows:
            self.counters.count("commits")
            LOG.info("committed %s; total rows so far %s", report.rows, self.totals)

    def teardown(self) -> None:
        # Best effort (a runner may skip teardown): a table left behind only makes the next start
        # re-read a little more, which the other tables skip.
        writer = getattr(self, "writer", None)
        if writer is None:
            return
        try:
            caught_up = writer.catch_up()
        except Exception as err:  # noqa: BLE001 - stopping anyway; the positions stay valid
            LOG.warning("could not record the final positions (%s: %s)", type(err).__name__, err)
            return
        if caught_up:
            LOG.info("recorded the final positions of %s", ", ".join(caught_up))


class WriteToIceberg(
    beam.PTransform[beam.pvalue.PCollection[JobBatch], beam.pvalue.PCollection[JobBatch]]
):
    """Commit event rows, window rows and dead letters with their source positions, once per bundle.

    Every worker commits the batches it holds (the shards it reads): the writers of one job merge
    each other's positions, and ``owner`` (the job's claim) fences them once a newer job claims
    the tables.
    """

    def __init__(
        self,
        warehouse: WarehouseSettings,
        window_seconds: int,
        positions_commit_seconds: float = DEFAULT_POSITIONS_COMMIT_SECONDS,
        owner: Owner | None = None,
        max_buffered_records: int = DEFAULT_MAX_BUFFERED_RECORDS,
    ) -> None:
        super().__init__()
        self.warehouse, self.window_seconds = warehouse, window_seconds
        self.positions_commit_seconds = positions_commit_seconds
        self.owner = owner
        self.max_buffered_records = max_buffered_records

    def expand(
        self, batches: beam.pvalue.PCollection[JobBatch]
    ) -> beam.pvalue.PCollection[JobBatch]:
        return batches | "CommitWithPositions" >> beam.ParDo(
            _Commit(
                self.warehouse,
                self.window_seconds,
                self.positions_commit_seconds,
                self.owner,
                self.max_buffered_records,
            )
        )


@dataclass(frozen=True, slots=True)
class JobStart:
    """Where the job reads from, and the claim its writers commit under."""

    start: StartPosition
    owner: Owner


def start_position(settings: JobSettings, now: float | None = None) -> StartPosition:
    """``claim_start(settings, None, now).start``: the start, without checking a stream's identity."""
    return claim_start(settings, None, now).start


def claim_start(
    settings: JobSettings, stream: StreamIdentity | None, now: float | None = None
) -> JobStart:
    """Claim the tables for this job, then say where reading starts.

    The claim (``sluice.tables.ownership.claim_tables``) checks ``stream`` against the stream the
    tables hold positions of (a different or recreated stream is a ``ConfigError``, unless
    ``--on_new_stream start_from_position`` resets a recreated one) and gives this job a new epoch,
    so an older job on the same tables is fenced. Claiming first, reading positions after, means no
    older job commits past the positions read.

    Reading resumes after each table's committed positions, else where the job first started. A
    shard resumes after the smallest position all tables hold for it. A shard some table holds no
    position for (killed between two tables' commits, or a shard that had no data yet) is read from
    the job's first start, recorded in the tables at the first run: LATEST means "when the job was
    first started", never "now", so nothing that arrived while the job was down is skipped.
    """
    warehouse = settings.warehouse_settings()
    tables = ensure_tables(open_catalog(warehouse), warehouse)
    claim = claim_tables(tables, stream, on_new_stream=settings.on_new_stream, now=now)
    if settings.start_position == "trim_horizon":
        resolved = "trim_horizon"
    elif settings.start_position == "at_timestamp" and settings.start_timestamp is not None:
        resolved = repr(settings.start_timestamp.timestamp())
    else:
        resolved = repr(time.time() if now is None else now)
    first = first_start(tables, resolved, replace=claim.reset)
    positions = ExactlyOnceWriter(tables, settings.window_seconds).resume_positions()
    start = StartPosition(
        kind="TRIM_HORIZON" if first == "trim_horizon" else "AT_TIMESTAMP",
        timestamp=None if first == "trim_horizon" else datetime.fromtimestamp(float(first), UTC),
        after_sequence={shard: str(sequence) for shard, sequence in positions.items()},
    )
    return JobStart(start, claim.owner)


def build(
    pipeline: beam.Pipeline, settings: JobSettings, job_start: JobStart | None = None
) -> beam.pvalue.PCollection[JobBatch]:
    """Apply the whole job to ``pipeline``. Its result is the tables: the collection returned is
    empty (``WriteToIceberg`` emits nothing) and only marks the end of the graph.

    ``job_start``: from ``claim_start`` (``sluice job run`` claims before building, with the
    stream's identity); None claims here without one."""
    if job_start is None:
        job_start = claim_start(settings, None)
    read = pipeline | "ReadFromKinesis" >> ReadFromKinesis(
        **settings.kinesis_read(start=job_start.start)
    )
    if settings.archive:
        read = read | "ArchiveRawRecords" >> ArchiveRawRecords(
            settings.warehouse_settings().resolved_warehouse()
        )
    return process(read, settings, job_start.owner)


def process(
    batches: beam.pvalue.PCollection[SourceBatch],
    settings: JobSettings,
    owner: Owner | None = None,
) -> beam.pvalue.PCollection[JobBatch]:
    """The stages after the source, shared by the stream job and ``sluice replay`` (output: empty)."""
    return (
        batches
        | "ParseAndValidate" >> ParseAndValidate(settings.time_horizon())
        | "EnrichWithGeoIp"
        >> EnrichWithGeoIp(
            str(settings.geoip_city_db) if settings.geoip_city_db else None,
            str(settings.geoip_asn_db) if settings.geoip_asn_db else None,
            settings.geoip_cache_size,
        )
        | "ApplyFilters" >> ApplyFilters(settings)
        | "WindowAndAggregate"
        >> WindowAndAggregate(settings.window_seconds, settings.allowed_lateness_seconds)
        | "WriteToIceberg"
        >> WriteToIceberg(
            settings.warehouse_settings(),
            settings.window_seconds,
            settings.positions_commit_seconds,
            owner,
            settings.max_buffered_records,
        )
    )
