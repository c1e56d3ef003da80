"""The monthly cost of a workload, by component, and what each optimization saves. Pure arithmetic.

In: ``CostSettings`` (the workload), a ``PriceTable`` and ``Measurements`` (from the benchmark).
Out: an ``Estimate``: one ``Line`` per component (API Gateway, Lambda, Kinesis in both capacity
modes, Firehose, Managed Flink or the transform Lambda, S3 storage and requests, Glue, Athena) with
its quantities and monthly dollars, the total (with the chosen Kinesis mode and processing path),
and ``Saving`` comparisons: KPL aggregation, readings per request, commit interval, partitioning,
on-demand vs provisioned, and Flink vs the Lambda path with the volume where they cross.
Nothing is read or written here; nothing becomes a dead letter.

Units: a GB is 2^30 bytes, a TB 2^40, a KB 1,024 and an MB 2^20 bytes, as AWS meters them; a month
is ``PriceTable.hours_per_month`` hours (730). No free tier is counted but Glue's (the others are
per account and shared with other workloads).

The Kinesis traffic of a batch of B events is derived from two measured figures: the bytes one
event adds to a KPL aggregate and the size of a full aggregate; a batch is ceil(B * bytes / full)
records, all full but the last, each rounded up to 1 KB (on-demand) or to 25 KB PUT units
(provisioned). ``kinesis_batch`` reproduces the batches the benchmark measured through the real edge
code (a test checks it), so sizes that were not measured are priced the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sluice.cost.measurements import Measurements, SourceMeasurement
from sluice.cost.prices import PriceTable
from sluice.cost.settings import CostSettings

__all__ = [
    "GLUE_REQUESTS_PER_COMMIT",
    "GLUE_REQUESTS_PER_QUERY",
    "BreakEven",
    "Estimate",
    "KinesisTraffic",
    "Line",
    "Saving",
    "TransformInvocations",
    "athena_query_bytes",
    "edge_seconds_per_event",
    "estimate",
    "kinesis_batch",
    "kinesis_break_even",
    "processing_crossover",
    "provisioned_shards",
    "rounded_units",
    "tiered",
    "transform_invocations",
]

KB = 1024
MB = 1024**2
GB = 1024**3
TB = 1024**4
GLUE_REQUESTS_PER_COMMIT = 2
"""pyiceberg 0.12's Glue catalog commits a table with GetTable + UpdateTable (``SkipArchive``
on by default, so no table versions pile up as catalog objects)."""
GLUE_REQUESTS_PER_QUERY = 1
"""Athena reads one table's definition (GetTable) per query."""
CATALOG_OBJECTS_BESIDES_TABLES = 1
"""The Glue database; Iceberg keeps partitions in its own metadata, not in Glue."""
LAMBDA_PAYLOAD_BYTES = 6 * MB
"""Largest event a mapping sends one invocation (Lambda's synchronous payload limit)."""
ON_DEMAND_INITIAL_SHARDS = 4
"""Shards an on-demand stream is created with (4 MB/s of writes)."""
COMMIT_INTERVALS = (10, 60, 300, 900)
"""Commit intervals the commit-interval comparison prices."""


@dataclass(frozen=True, slots=True)
class KinesisTraffic:
    """Kinesis records, bytes and billing units (per batch, or per second when summed)."""

    records: float = 0.0
    bytes: float = 0.0
    on_demand_kb: float = 0.0
    put_units: float = 0.0
    firehose_units: float = 0.0
    """5 KB units Firehose bills when it rounds each Kinesis record."""

    def __add__(self, other: KinesisTraffic) -> KinesisTraffic:
        return KinesisTraffic(
            self.records + other.records,
            self.bytes + other.bytes,
            self.on_demand_kb + other.on_demand_kb,
            self.put_units + other.put_units,
            self.firehose_units + other.firehose_units,
        )

    def scaled(self, factor: float) -> KinesisTraffic:
        return KinesisTraffic(
            self.records * factor,
            self.bytes * factor,
            self.on_demand_kb * factor,
            self.put_units * factor,
            self.firehose_units * factor,
        )


@dataclass(frozen=True, slots=True)
class Line:
    """One component's monthly cost, with the quantities it comes from."""

    component: str
    monthly_usd: float
    detail: str
    quantities: dict[str, float] = field(default_factory=dict)
    counted: bool = True
    """False for an alternative priced beside the one counted (the other Kinesis mode)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "monthly_usd": self.monthly_usd,
            "detail": self.detail,
            "quantities": self.quantities,
            "counted": self.counted,
        }


@dataclass(frozen=True, slots=True)
class Saving:
    """One optimization: the monthly cost of each option (``options``: label -> USD), the chosen one."""

    name: str
    chosen: str
    options: dict[str, float]
    detail: str
    figures: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def saves_usd(self) -> float:
        """What the chosen option saves against the dearest one."""
        return max(self.options.values()) - self.options[self.chosen]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "chosen": self.chosen,
            "options_monthly_usd": self.options,
            "saves_monthly_usd": self.saves_usd,
            "detail": self.detail,
            "figures": self.figures,
        }


@dataclass(frozen=True, slots=True)
class Estimate:
    """The lines, the total of the counted ones, the savings and what the figures rest on."""

    lines: tuple[Line, ...]
    savings: tuple[Saving, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def total_usd(self) -> float:
        return sum(line.monthly_usd for line in self.lines if line.counted)

    def component(self, name: str) -> Line:
        return next(line for line in self.lines if line.component == name)


# --- building blocks (public for tests: hand-computed cases) ------------------------------------


def rounded_units(total_bytes: float, records: int, full_bytes: float, unit: float) -> int:
    """Billing units of ``records`` records holding ``total_bytes``: all full (``full_bytes``) but
    the last, each rounded up to a whole ``unit``."""
    if records <= 0 or total_bytes <= 0:
        return 0
    last = total_bytes - (records - 1) * full_bytes
    return (records - 1) * math.ceil(full_bytes / unit) + math.ceil(last / unit)


def kinesis_batch(
    measured: SourceMeasurement,
    events: int,
    *,
    aggregated: bool,
    max_aggregate_bytes: int,
    prices: PriceTable,
) -> KinesisTraffic:
    """The Kinesis traffic of one edge batch of ``events`` events (see the module docstring)."""
    kb_unit = prices["kinesis_on_demand_record_rounding_bytes"]
    put_unit = prices["kinesis_put_unit_bytes"]
    firehose_unit = prices["firehose_record_rounding_bytes"]
    if events <= 0:
        return KinesisTraffic()
    if not aggregated:
        size = measured.envelope_bytes_per_event
        return KinesisTraffic(
            records=events,
            bytes=events * size,
            on_demand_kb=events * measured.on_demand_kb_per_event,
            put_units=events * measured.put_units_per_event,
            firehose_units=events * math.ceil(size / firehose_unit),
        )
    total = events * measured.aggregated_bytes_per_event
    records = max(1, math.ceil(total / max_aggregate_bytes))
    return KinesisTraffic(
        records=records,
        bytes=total,
        on_demand_kb=rounded_units(total, records, max_aggregate_bytes, kb_unit),
        put_units=rounded_units(total, records, max_aggregate_bytes, put_unit),
        firehose_units=rounded_units(total, records, max_aggregate_bytes, firehose_unit),
    )


def edge_seconds_per_event(measured: SourceMeasurement, batch: int) -> float:
    """Edge CPU seconds per event at the measured batch size nearest to ``batch`` (log scale):
    small batches pay a per-request overhead that large ones spread out."""
    nearest = min(
        measured.batches, key=lambda b: abs(math.log(b.events_per_batch) - math.log(max(1, batch)))
    )
    return nearest.edge_seconds / (nearest.events_per_batch * nearest.batches)


def tiered(quantity: float, tiers: Sequence[tuple[float, float]]) -> float:
    """Cost of ``quantity`` units over (units in the tier, price per unit) tiers; the last tier
    is unbounded."""
    cost = 0.0
    left = quantity
    for i, (size, price) in enumerate(tiers):
        take = left if i == len(tiers) - 1 else min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    return cost


def provisioned_shards(
    bytes_per_second: float, records_per_second: float, consumers: int, prices: PriceTable
) -> int:
    """Shards a provisioned stream needs: 1 MiB/s and 1,000 records/s in, 2 MiB/s out (shared)."""
    return max(
        1,
        math.ceil(bytes_per_second / prices["kinesis_shard_bytes_in_per_second"]),
        math.ceil(records_per_second / prices["kinesis_shard_records_in_per_second"]),
        math.ceil(consumers * bytes_per_second / prices["kinesis_shard_bytes_out_per_second"]),
    )


def athena_query_bytes(
    event_bytes_per_second: float,
    hours: float,
    partitioning: str,
    retention_days: float,
    column_fraction: float,
) -> float:
    """Bytes one query scans: every partition its range touches (compacted partitions, no
    row-group skipping), never more than the table holds."""
    held = event_bytes_per_second * retention_days * 86_400
    if partitioning == "none":
        span = held
    elif partitioning == "day":
        span = event_bytes_per_second * math.ceil(hours / 24) * 86_400
    else:
        span = event_bytes_per_second * math.ceil(hours) * 3600
    return min(span, held) * column_fraction


# --- the estimate -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    """One source's rates: events and invocations per second, and its per-invocation batch."""

    name: str
    events_per_second: float
    events_per_invocation: float
    memory_mb: int
    wait_ms: float
    publish_batch: int
    """Events per KPL batch (at most the log edge's 5,000 lines)."""


LOG_BATCH_LINES = 5000
"""The log edge publishes at most this many lines per batch (``SLUICE_BATCH_LINES``)."""


def _sources(s: CostSettings) -> list[_Source]:
    feed_batch = max(1.0, s.feed_items_per_poll)
    return [
        _Source("iot", s.iot_events_per_second, s.iot_readings_per_request,
                s.iot_lambda_memory_mb, s.lambda_io_ms_per_invocation, s.iot_readings_per_request),
        _Source("weblog", s.weblog_lines_per_second, s.weblog_lines_per_invocation,
                s.weblog_lambda_memory_mb, s.lambda_io_ms_per_invocation,
                min(s.weblog_lines_per_invocation, LOG_BATCH_LINES)),
        _Source("feed", s.feed_polls_per_minute / 60 * s.feed_items_per_poll, feed_batch,
                s.feed_lambda_memory_mb, s.lambda_io_ms_per_invocation + s.feed_fetch_ms,
                max(1, round(feed_batch))),
    ]  # fmt: skip


def _invocations_per_second(s: CostSettings, source: _Source) -> float:
    if source.name == "feed":
        return s.feed_polls_per_minute / 60
    return source.events_per_second / source.events_per_invocation


def _traffic(s: CostSettings, m: Measurements, prices: PriceTable) -> dict[str, KinesisTraffic]:
    """Kinesis traffic per second, per source."""
    out: dict[str, KinesisTraffic] = {}
    for source in _sources(s):
        if source.events_per_second <= 0:
            out[source.name] = KinesisTraffic()
            continue
        batch = kinesis_batch(
            m.source(source.name),
            source.publish_batch,
            aggregated=s.aggregation,
            max_aggregate_bytes=m.max_aggregate_bytes,
            prices=prices,
        )
        out[source.name] = batch.scaled(source.events_per_second / source.publish_batch)
    return out


def _api_gateway(s: CostSettings, m: Measurements, p: PriceTable, seconds: float) -> Line:
    requests_per_second = s.iot_events_per_second / s.iot_readings_per_request
    request_bytes = s.iot_readings_per_request * m.source("iot").input_bytes_per_event
    metered = math.ceil(request_bytes / p["api_gateway_http_metering_bytes"])
    monthly = requests_per_second * seconds * metered
    cost = tiered(
        monthly / 1e6,
        [
            (300, p["api_gateway_http_per_million"]),
            (700, p["api_gateway_http_per_million_next_700m"]),
            (math.inf, p["api_gateway_http_per_million_over_1b"]),
        ],
    )
    return Line(
        "API Gateway HTTP API",
        cost,
        f"{monthly / 1e6:,.0f} M requests/month ({s.iot_readings_per_request} readings, "
        f"{request_bytes / KB:,.1f} KB each)",
        {"requests_per_month": monthly, "request_bytes": request_bytes},
    )


def _lambda(s: CostSettings, m: Measurements, p: PriceTable, seconds: float) -> Line:
    invocations = 0.0
    gb_seconds = 0.0
    durations: dict[str, float] = {}
    for source in _sources(s):
        per_second = _invocations_per_second(s, source)
        if per_second <= 0:
            continue
        cpu_share = min(1.0, source.memory_mb / p["lambda_full_vcpu_memory_mb"])
        per_event = edge_seconds_per_event(m.source(source.name), source.publish_batch)
        cpu_ms = source.events_per_invocation * per_event * 1000
        billed_ms = math.ceil(source.wait_ms + cpu_ms / cpu_share)
        durations[f"{source.name}_billed_ms"] = billed_ms
        invocations += per_second * seconds
        gb_seconds += per_second * seconds * source.memory_mb / 1024 * billed_ms / 1000
    cost = (
        invocations / 1e6 * p["lambda_per_million_requests"]
        + gb_seconds * p["lambda_per_gb_second"]
    )
    shown = ", ".join(f"{k.removesuffix('_billed_ms')} {v:,.0f} ms" for k, v in durations.items())
    return Line(
        "Lambda (edges)",
        cost,
        f"{invocations / 1e6:,.1f} M invocations, {gb_seconds / 1e6:,.2f} M GB-s ({shown})",
        {"invocations_per_month": invocations, "gb_seconds_per_month": gb_seconds, **durations},
    )


def _kinesis(
    s: CostSettings, traffic: KinesisTraffic, p: PriceTable, seconds: float
) -> tuple[Line, Line]:
    hours = p.hours_per_month
    days = s.kinesis_retention_days
    stored_gb = traffic.bytes / GB * 86_400  # one day of data, in GB
    extended_gb = stored_gb * (min(days, 7) - 1)
    long_term_gb = stored_gb * max(0.0, days - 7)
    long_term = long_term_gb * p["kinesis_long_term_retention_gb_month"]
    gb_in = traffic.on_demand_kb * KB / GB * seconds
    gb_out = traffic.bytes / GB * seconds * s.kinesis_consumers
    on_demand = (
        hours * p["kinesis_on_demand_stream_hour"]
        + gb_in * p["kinesis_on_demand_per_gb_in"]
        + gb_out * p["kinesis_on_demand_per_gb_out"]
        + extended_gb * p["kinesis_on_demand_extended_retention_gb_month"]
        + long_term
    )
    shards = provisioned_shards(
        traffic.bytes * s.peak_factor, traffic.records * s.peak_factor, s.kinesis_consumers, p
    )
    put_units = traffic.put_units * seconds
    provisioned = (
        shards * hours * p["kinesis_shard_hour"]
        + put_units / 1e6 * p["kinesis_per_million_put_units"]
        + (shards * hours * p["kinesis_extended_retention_shard_hour"] if days > 1 else 0.0)
        + long_term
    )
    common = {
        "records_per_second": traffic.records,
        "bytes_per_second": traffic.bytes,
        "retention_days": days,
    }
    return (
        Line(
            "Kinesis on-demand",
            on_demand,
            f"{gb_in:,.0f} GB in (1 KB rounding), {gb_out:,.0f} GB out "
            f"({s.kinesis_consumers} consumers), {traffic.records:,.1f} records/s",
            {**common, "gb_in_per_month": gb_in, "gb_out_per_month": gb_out},
            counted=s.kinesis_mode == "on-demand",
        ),
        Line(
            "Kinesis provisioned",
            provisioned,
            f"{shards} shards (peak x{s.peak_factor:g}), {put_units / 1e6:,.0f} M PUT units",
            {**common, "shards": shards, "put_units_per_month": put_units},
            counted=s.kinesis_mode == "provisioned",
        ),
    )


def _archive_objects(s: CostSettings, archive_bytes_per_second: float, seconds: float) -> float:
    """S3 objects Firehose writes a month: one per buffer (time or size, whichever fills first)."""
    by_time = seconds / max(1, s.firehose_buffer_seconds)
    by_size = archive_bytes_per_second * seconds / (s.firehose_buffer_mb * MB)
    return max(by_time, by_size) if archive_bytes_per_second > 0 else 0.0


def _firehose(
    s: CostSettings,
    m: Measurements,
    traffic: KinesisTraffic,
    events_per_second: dict[str, float],
    p: PriceTable,
    seconds: float,
) -> Line:
    unit = p["firehose_record_rounding_bytes"]
    if s.firehose_rounding == "kinesis_record":
        billed_bytes = traffic.firehose_units * unit
    else:
        billed_bytes = sum(
            rate * math.ceil(m.source(name).envelope_bytes_per_event / unit) * unit
            for name, rate in events_per_second.items()
        )
    gb_billed = billed_bytes / GB * seconds
    gb_delivered = traffic.bytes / GB * seconds
    archive = sum(
        rate * m.source(n).archive_bytes_per_event for n, rate in events_per_second.items()
    )
    objects = _archive_objects(s, archive, seconds)
    cost = gb_billed * p["firehose_per_gb"]
    if s.firehose_dynamic_partitioning:
        cost += gb_delivered * p["firehose_dynamic_partitioning_per_gb"]
        cost += objects / 1000 * p["firehose_dynamic_partitioning_per_1000_objects"]
    return Line(
        "Firehose (raw archive)",
        cost,
        f"{gb_billed:,.0f} GB billed (5 KB per {s.firehose_rounding.replace('_', ' ')}), "
        f"{objects:,.0f} objects",
        {"gb_billed_per_month": gb_billed, "objects_per_month": objects},
    )


def _events_per_kpu(s: CostSettings, m: Measurements) -> tuple[float, str]:
    if s.msf_events_per_kpu is not None:
        return s.msf_events_per_kpu, "given"
    if m.job.pyflink_app_events_per_second is not None:
        return m.job.pyflink_app_events_per_second, "measured: the PyFlink application, one slot"
    if m.job.beam_job_events_per_second is not None:
        return m.job.beam_job_events_per_second, "measured: the Beam job end to end, per core"
    return m.job.stages_events_per_second, "measured: the job's stages in one process, per core"


def _flink(s: CostSettings, m: Measurements, p: PriceTable, total_events: float) -> Line:
    per_kpu, where = _events_per_kpu(s, m)
    kpus = max(1, math.ceil(total_events * s.peak_factor / per_kpu))
    billed = kpus + p["msf_orchestration_kpus"]
    storage_gb = kpus * p["msf_storage_gb_per_kpu"]
    cost = billed * p.hours_per_month * p["msf_kpu_hour"] + storage_gb * p["msf_storage_gb_month"]
    return Line(
        "Managed Flink (MSF)",
        cost,
        f"{kpus} KPU + {p['msf_orchestration_kpus']:g} orchestration at {per_kpu:,.0f} events/s "
        f"per KPU ({where})",
        {"kpus": kpus, "billed_kpus": billed, "events_per_kpu": per_kpu},
        counted=s.processing == "flink",
    )


def _with_lambda_commits(s: CostSettings, p: PriceTable, m: Measurements) -> CostSettings:
    """On the Lambda path every invocation commits: the commit interval the S3 and Glue lines
    count is the time between two invocations (all shards together)."""
    if s.processing != "lambda":
        return s
    traffic = sum(_traffic(s, m, p).values(), KinesisTraffic())
    events = sum(src.events_per_second for src in _sources(s))
    run = transform_invocations(s, traffic, events, p)
    if run.per_second <= 0:
        return s
    return s.model_copy(update={"commit_interval_seconds": 1 / run.per_second})


@dataclass(frozen=True, slots=True)
class TransformInvocations:
    """How a mapping invokes the transform Lambda for a workload (per second, all shards)."""

    shards: int
    per_second: float
    events_per_invocation: float
    billed_ms: int


def transform_invocations(
    s: CostSettings, traffic: KinesisTraffic, events_per_second: float, p: PriceTable
) -> TransformInvocations:
    """Invocations: per shard with records, about one per batching window, more once a window's
    records exceed ``transform_batch_size`` records or 6 MB, fewer when records are rarer than
    one per window. Duration: the measured CPU time (fixed + per event) scaled to the function's
    vCPU share, plus the assumed wait for Glue and S3."""
    shards = s.transform_shards or provisioned_shards(
        traffic.bytes * s.peak_factor, traffic.records * s.peak_factor, s.kinesis_consumers, p
    )
    if s.transform_shards is None and s.kinesis_mode == "on-demand":
        shards = max(shards, ON_DEMAND_INITIAL_SHARDS)
    records = traffic.records / shards
    window = max(1.0, s.transform_batch_window_seconds)  # 0: the mapping still polls once a second
    per_shard = max(
        min(1 / window, records),
        records / s.transform_batch_size,
        traffic.bytes / shards / LAMBDA_PAYLOAD_BYTES,
    )
    per_second = per_shard * min(shards, max(1.0, traffic.records * window)) if records else 0.0
    events = events_per_second / per_second if per_second else 0.0
    cpu_share = min(1.0, s.transform_lambda_memory_mb / p["lambda_full_vcpu_memory_mb"])
    cpu_ms = s.transform_fixed_cpu_ms + events * s.transform_cpu_us_per_event / 1000
    return TransformInvocations(
        shards, per_second, events, math.ceil(s.transform_commit_wait_ms + cpu_ms / cpu_share)
    )


def _transform_lambda(
    s: CostSettings, p: PriceTable, traffic: KinesisTraffic, events: float, seconds: float
) -> Line:
    run = transform_invocations(s, traffic, events, p)
    invocations = run.per_second * seconds
    gb_seconds = invocations * s.transform_lambda_memory_mb / 1024 * run.billed_ms / 1000
    cost = (
        invocations / 1e6 * p["lambda_per_million_requests"]
        + gb_seconds * p["lambda_per_gb_second"]
    )
    return Line(
        "Lambda (transform)",
        cost,
        f"{invocations / 1e6:,.2f} M invocations over {run.shards} shards, "
        f"{run.events_per_invocation:,.0f} events and {run.billed_ms:,} ms each, "
        f"{gb_seconds / 1e6:,.2f} M GB-s",
        {
            "invocations_per_month": invocations,
            "gb_seconds_per_month": gb_seconds,
            "shards": run.shards,
            "events_per_invocation": run.events_per_invocation,
            "billed_ms": run.billed_ms,
        },
        counted=s.processing == "lambda",
    )


def _commits_per_month(s: CostSettings, seconds: float) -> float:
    return seconds / s.commit_interval_seconds


def _storage(
    s: CostSettings, m: Measurements, p: PriceTable, events_per_second: dict[str, float]
) -> Line:
    archive = sum(
        rate * m.source(n).archive_bytes_per_event for n, rate in events_per_second.items()
    )
    total_events = sum(events_per_second.values())
    table = sum(rate * m.source(n).parquet_bytes_per_event for n, rate in events_per_second.items())
    table += total_events * m.commits.window_bytes_per_event
    archive_gb = archive * s.raw_archive_retention_days * 86_400 / GB
    table_gb = table * s.warehouse_retention_days * 86_400 / GB
    commits_kept = s.snapshot_retention_days * 86_400 / s.commit_interval_seconds
    metadata_gb = commits_kept * m.commits.metadata_bytes_per_commit / GB
    gb = archive_gb + table_gb + metadata_gb
    return Line(
        "S3 storage",
        gb * p["s3_standard_gb_month"],
        f"{archive_gb:,.0f} GB raw archive ({s.raw_archive_retention_days:g} d), "
        f"{table_gb:,.0f} GB tables ({s.warehouse_retention_days:g} d), "
        f"{metadata_gb:,.1f} GB metadata",
        {"archive_gb": archive_gb, "table_gb": table_gb, "metadata_gb": metadata_gb},
    )


def _query_files(s: CostSettings, m: Measurements) -> float:
    """Files one query opens: the data files its range holds (one commit's event files per commit
    interval, uncompacted) plus the metadata a commit reads."""
    in_range = s.athena_query_hours * 3600 / s.commit_interval_seconds
    return max(1.0, in_range * m.commits.event_data_files_per_commit) + (
        m.commits.files_read_per_commit
    )


def _s3_requests(
    s: CostSettings,
    m: Measurements,
    p: PriceTable,
    seconds: float,
    events_per_second: dict[str, float],
) -> Line:
    commits = _commits_per_month(s, seconds)
    archive = sum(
        rate * m.source(n).archive_bytes_per_event for n, rate in events_per_second.items()
    )
    objects = _archive_objects(s, archive, seconds)
    puts = commits * m.commits.files_written_per_commit + objects
    queries = s.athena_queries_per_day * seconds / 86_400
    gets = commits * m.commits.files_read_per_commit + queries * _query_files(s, m)
    cost = puts / 1000 * p["s3_put_per_1000"] + gets / 1000 * p["s3_get_per_1000"]
    files_per_day = m.commits.data_files_per_commit * 86_400 / s.commit_interval_seconds
    return Line(
        "S3 requests",
        cost,
        f"{puts / 1e6:,.2f} M PUT, {gets / 1e6:,.2f} M GET; {files_per_day:,.0f} data files/day "
        f"at {s.commit_interval_seconds:g} s commits",
        {"puts_per_month": puts, "gets_per_month": gets, "data_files_per_day": files_per_day},
    )


def _glue(s: CostSettings, m: Measurements, p: PriceTable, seconds: float) -> Line:
    objects = m.commits.tables + CATALOG_OBJECTS_BESIDES_TABLES
    commits = _commits_per_month(s, seconds)
    queries = s.athena_queries_per_day * seconds / 86_400
    requests = (
        commits * m.commits.tables_committed_per_commit * GLUE_REQUESTS_PER_COMMIT
        + queries * GLUE_REQUESTS_PER_QUERY
    )
    cost = max(0.0, objects - p["glue_free_objects"]) / 100_000 * p["glue_per_100k_objects"]
    cost += max(0.0, requests - p["glue_free_requests"]) / 1e6 * p["glue_per_million_requests"]
    return Line(
        "Glue Data Catalog",
        cost,
        f"{objects:,.0f} objects, {requests / 1e6:,.2f} M requests (first million of each free)",
        {"objects": objects, "requests_per_month": requests},
    )


def _athena(
    s: CostSettings,
    m: Measurements,
    p: PriceTable,
    events_per_second: dict[str, float],
    seconds: float,
) -> Line:
    event_bytes = sum(
        rate * m.source(n).parquet_bytes_per_event for n, rate in events_per_second.items()
    )
    scanned = athena_query_bytes(
        event_bytes, s.athena_query_hours, s.athena_partitioning,
        s.warehouse_retention_days, s.athena_column_fraction,
    )  # fmt: skip
    billed = max(scanned, p["athena_min_bytes_per_query"])
    queries = s.athena_queries_per_day * seconds / 86_400
    cost = queries * billed / TB * p["athena_per_tb"]
    return Line(
        "Athena",
        cost,
        f"{queries:,.0f} queries, {billed / GB:,.2f} GB billed each "
        f"({s.athena_query_hours:g} h, {s.athena_partitioning} partitions)",
        {"queries_per_month": queries, "bytes_billed_per_query": billed},
    )


def _lines(s: CostSettings, p: PriceTable, m: Measurements) -> tuple[Line, ...]:
    seconds = p.hours_per_month * 3600
    per_source = _traffic(s, m, p)
    traffic = sum(per_source.values(), KinesisTraffic())
    events = {src.name: src.events_per_second for src in _sources(s)}
    on_demand, provisioned = _kinesis(s, traffic, p, seconds)
    commits = _with_lambda_commits(s, p, m)
    return (
        _api_gateway(s, m, p, seconds),
        _lambda(s, m, p, seconds),
        on_demand,
        provisioned,
        _firehose(s, m, traffic, events, p, seconds),
        _flink(s, m, p, sum(events.values())),
        _transform_lambda(s, p, traffic, sum(events.values()), seconds),
        _storage(commits, m, p, events),
        _s3_requests(commits, m, p, seconds, events),
        _glue(commits, m, p, seconds),
        _athena(s, m, p, events, seconds),
    )


def _total(s: CostSettings, p: PriceTable, m: Measurements) -> float:
    return Estimate(_lines(s, p, m)).total_usd


def _components(lines: Sequence[Line], names: Sequence[str]) -> float:
    return sum(line.monthly_usd for line in lines if line.component in names and line.counted)


def _aggregation_saving(s: CostSettings, p: PriceTable, m: Measurements) -> Saving:
    names = ("Kinesis on-demand", "Kinesis provisioned", "Firehose (raw archive)")
    options: dict[str, float] = {}
    figures: dict[str, dict[str, float]] = {}
    for label, on in (("KPL aggregation", True), ("one record per event", False)):
        alt = s.model_copy(update={"aggregation": on})
        lines = _lines(alt, p, m)
        options[label] = _components(lines, names)
        kinesis = next(li for li in lines if li.component == f"Kinesis {s.kinesis_mode}")
        figures[label] = {
            "records_per_second": kinesis.quantities["records_per_second"],
            **({"shards": kinesis.quantities["shards"]} if "shards" in kinesis.quantities else {}),
        }
    events = sum(src.events_per_second for src in _sources(s))
    ratio = events / figures["KPL aggregation"]["records_per_second"] if events else 0.0
    return Saving(
        "KPL aggregation (Kinesis and Firehose)",
        "KPL aggregation" if s.aggregation else "one record per event",
        options,
        f"{ratio:,.1f} user records per Kinesis record with aggregation "
        f"(measured bytes per event; IoT batches are requests of {s.iot_readings_per_request})",
        figures,
    )


def _batching_saving(s: CostSettings, p: PriceTable, m: Measurements) -> Saving:
    chosen = f"{s.iot_readings_per_request} per request"
    options = {chosen: _total(s, p, m)}
    for readings in (1, 100):
        if readings != s.iot_readings_per_request:
            alt = s.model_copy(update={"iot_readings_per_request": readings})
            options[f"{readings} per request"] = _total(alt, p, m)
    return Saving(
        "IoT readings per request (API Gateway, Lambda, Kinesis)",
        chosen,
        options,
        "total monthly cost with devices sending this many readings per HTTP request",
    )


def _commit_saving(s: CostSettings, p: PriceTable, m: Measurements) -> Saving:
    names = ("S3 requests", "S3 storage", "Glue Data Catalog")
    options: dict[str, float] = {}
    figures: dict[str, dict[str, float]] = {}
    for interval in sorted({*COMMIT_INTERVALS, s.commit_interval_seconds}):
        alt = s.model_copy(update={"commit_interval_seconds": interval, "processing": "flink"})
        lines = _lines(alt, p, m)
        label = f"{interval:g} s"
        options[label] = _components(lines, names)
        requests = next(li for li in lines if li.component == "S3 requests").quantities
        figures[label] = {
            "commits_per_day": 86_400 / interval,
            "data_files_per_day": requests["data_files_per_day"],
            "puts_per_month": requests["puts_per_month"],
            "gets_per_month": requests["gets_per_month"],
            "mean_data_file_bytes": _mean_file_bytes(alt, m),
        }
    return Saving(
        "Commit interval (S3 requests, metadata, Glue; small files)",
        f"{s.commit_interval_seconds:g} s",
        options,
        f"measured per commit: {m.commits.data_files_per_commit:g} data files, "
        f"{m.commits.files_written_per_commit:g} files written, "
        f"{m.commits.files_read_per_commit:g} read"
        + (
            "; the Flink job's interval: on the Lambda path each invocation commits (one per "
            "shard per transform_batch_window_seconds)"
            if s.processing == "lambda"
            else ""
        ),
        figures,
    )


def _mean_file_bytes(s: CostSettings, m: Measurements) -> float:
    """Mean size of the data files one commit writes (before compaction)."""
    events = {src.name: src.events_per_second for src in _sources(s)}
    per_second = sum(rate * m.source(n).parquet_bytes_per_event for n, rate in events.items())
    per_second += sum(events.values()) * m.commits.window_bytes_per_event
    files = m.commits.data_files_per_commit
    return per_second * s.commit_interval_seconds / files if files else 0.0


def _partition_saving(s: CostSettings, p: PriceTable, m: Measurements) -> Saving:
    options: dict[str, float] = {}
    figures: dict[str, dict[str, float]] = {}
    for partitioning in ("none", "day", "hour"):
        alt = s.model_copy(update={"athena_partitioning": partitioning})
        seconds = p.hours_per_month * 3600
        events = {src.name: src.events_per_second for src in _sources(alt)}
        line = _athena(alt, m, p, events, seconds)
        options[partitioning] = line.monthly_usd
        figures[partitioning] = {
            "bytes_billed_per_query": line.quantities["bytes_billed_per_query"]
        }
    return Saving(
        "Partitioning (Athena bytes scanned)",
        s.athena_partitioning,
        options,
        f"{s.athena_queries_per_day:g} queries/day over {s.athena_query_hours:g} h of event time",
        figures,
    )


@dataclass(frozen=True, slots=True)
class BreakEven:
    """Where provisioned and on-demand Kinesis cost the same, all else equal.

    ``events_per_second``: the total rate (all sources scaled together) above which provisioned
    stays cheaper; ``None`` when it is cheaper over the whole range scanned (1/1000x..1000x:
    ``provisioned_always_cheaper``) or never. ``peak_factor``: how far peaks may exceed the
    average (shards sized for the peak, on-demand billing the average) before on-demand is cheaper.
    """

    events_per_second: float | None
    provisioned_always_cheaper: bool
    peak_factor: float | None


def _kinesis_costs(s: CostSettings, p: PriceTable, m: Measurements) -> tuple[float, float]:
    seconds = p.hours_per_month * 3600
    traffic = sum(_traffic(s, m, p).values(), KinesisTraffic())
    on_demand, provisioned = _kinesis(s, traffic, p, seconds)
    return on_demand.monthly_usd, provisioned.monthly_usd


def kinesis_break_even(s: CostSettings, p: PriceTable, m: Measurements) -> BreakEven:
    """The rate and the peak factor at which the two capacity modes cost the same (see
    ``BreakEven``), found on a grid of 20 points per decade."""
    grid = [10 ** (k / 20) for k in range(-60, 61)]
    base = sum(src.events_per_second for src in _sources(s))
    cheaper: list[bool] = []
    for scale in grid:
        alt = s.model_copy(
            update={
                "iot_events_per_second": s.iot_events_per_second * scale,
                "weblog_lines_per_second": s.weblog_lines_per_second * scale,
                "feed_items_per_poll": s.feed_items_per_poll * scale,
            }
        )
        on_demand, provisioned = _kinesis_costs(alt, p, m)
        cheaper.append(provisioned < on_demand)
    always = all(cheaper)
    rate: float | None = None
    if base > 0 and not always:
        rate = next((base * grid[i] for i in range(1, len(grid)) if all(cheaper[i:])), None)
    peak: float | None = None
    for k in range(61):
        factor = 10 ** (k / 20)
        on_demand, provisioned = _kinesis_costs(s.model_copy(update={"peak_factor": factor}), p, m)
        if provisioned >= on_demand:
            peak = factor
            break
    return BreakEven(rate, always, peak)


def _mode_saving(s: CostSettings, lines: Sequence[Line], p: PriceTable, m: Measurements) -> Saving:
    options = {
        "on-demand": next(li for li in lines if li.component == "Kinesis on-demand").monthly_usd,
        "provisioned": next(
            li for li in lines if li.component == "Kinesis provisioned"
        ).monthly_usd,
    }
    even = kinesis_break_even(s, p, m)
    if even.provisioned_always_cheaper:
        where = "provisioned is cheaper at every rate from 1/1000x to 1000x of this workload"
    elif even.events_per_second is not None:
        where = f"provisioned is cheaper above about {even.events_per_second:,.0f} events/s"
    else:
        where = "on-demand is cheaper over 1/1000x..1000x of this workload"
    if even.peak_factor is not None:
        where += (
            f"; on-demand wins once peaks exceed about {even.peak_factor:,.1f}x the average "
            "(shards sized for the peak)"
        )
    found = {"events_per_second": even.events_per_second, "peak_factor": even.peak_factor}
    figures = {"break_even": {k: v for k, v in found.items() if v is not None}}
    return Saving("Kinesis capacity mode", s.kinesis_mode, options, where, figures)


def _scaled(s: CostSettings, scale: float) -> CostSettings:
    return s.model_copy(
        update={
            "iot_events_per_second": s.iot_events_per_second * scale,
            "weblog_lines_per_second": s.weblog_lines_per_second * scale,
            "feed_items_per_poll": s.feed_items_per_poll * scale,
        }
    )


def _processing_costs(s: CostSettings, p: PriceTable, m: Measurements) -> dict[str, float]:
    """Each path's processing line plus the S3 and Glue lines its commits drive."""
    costs: dict[str, float] = {}
    for path in ("flink", "lambda"):
        lines = _lines(s.model_copy(update={"processing": path}), p, m)
        names = (
            "Managed Flink (MSF)" if path == "flink" else "Lambda (transform)",
            "S3 requests",
            "Glue Data Catalog",
        )
        costs[path] = sum(line.monthly_usd for line in lines if line.component in names)
    return costs


def processing_crossover(s: CostSettings, p: PriceTable, m: Measurements) -> float | None:
    """The total rate (all sources scaled together, 1/1000x..1000x of ``s``, 20 points a decade)
    above which Managed Flink costs less than the Lambda path; None if it never does there."""
    base = sum(src.events_per_second for src in _sources(s))
    if base <= 0:
        return None
    for k in range(-60, 61):
        scale = 10 ** (k / 20)
        costs = _processing_costs(_scaled(s, scale), p, m)
        if costs["flink"] <= costs["lambda"]:
            return base * scale
    return None


def _processing_saving(s: CostSettings, p: PriceTable, m: Measurements) -> Saving:
    options = _processing_costs(s, p, m)
    crossover = processing_crossover(s, p, m)
    floor = _flink(_scaled(s, 0), m, p, 0).monthly_usd
    if crossover is None:
        where = "the Lambda path is cheaper over 1/1000x..1000x of this workload"
    else:
        where = (
            f"the Lambda path is cheaper below about {crossover:,.0f} events/s, Managed Flink "
            f"above (its floor, 1 KPU + orchestration, is {floor:,.0f} USD/month before any data)"
        )
    figures = {"crossover": {"events_per_second": crossover}} if crossover is not None else {}
    return Saving("Processing path (with its commits' S3 and Glue)", s.processing, options,
                  where, figures)  # fmt: skip


Comparison = Callable[[CostSettings, PriceTable, Measurements], Saving]


def estimate(settings: CostSettings, prices: PriceTable, measured: Measurements) -> Estimate:
    """The monthly cost of ``settings``' workload, by component, with the optimizations' savings."""
    lines = _lines(settings, prices, measured)
    comparisons: tuple[Comparison, ...] = (
        _aggregation_saving,
        _batching_saving,
        _commit_saving,
        _partition_saving,
    )
    savings = [compare(settings, prices, measured) for compare in comparisons]
    savings.append(_mode_saving(settings, lines, prices, measured))
    savings.append(_processing_saving(settings, prices, measured))
    per_kpu, where = _events_per_kpu(settings, measured)
    notes = (
        f"prices: {prices.region}, {prices.as_of}; not confirmed by a fetched page: "
        + ", ".join(prices.unconfirmed()),
        f"measurements: {measured.measured_at} ({measured.command})",
        f"Flink KPUs sized at {per_kpu:,.0f} events/s per KPU ({where}; ParallelismPerKPU 1: "
        "a PyFlink slot's Python worker keeps one vCPU busy)",
        "Lambda duration = measured edge CPU time scaled to the function's vCPU share "
        "(memory/1769 MB) + the assumed I/O wait (lambda_io_ms_per_invocation, feed_fetch_ms)",
        "no free tier counted but Glue's; Athena's S3 GETs counted uncompacted",
        "transform Lambda duration = measured CPU time (fixed + per event, "
        "benchmarks.transform_lambda) scaled to its vCPU share + the assumed Glue/S3 wait "
        "(transform_commit_wait_ms); on that path every invocation is a commit",
    )
    return Estimate(lines, tuple(savings), notes)
