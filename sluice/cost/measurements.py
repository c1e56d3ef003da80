"""The measured figures ``sluice cost`` needs, as written by the benchmark (``make bench``).

In: a JSON file written by ``python -m benchmarks.measure`` (committed as
``reports/measurements.json``, with the command and the date it was measured on).
Out: a ``Measurements`` value: per source, bytes per event (input, envelope, KPL-aggregated, raw
archive, Parquet) and the Kinesis records, bytes and billing units of real edge batches; per table
commit, the files written and read; the job's events per second per core.
Errors: a file that is missing, not JSON or lacks a field is a ``ConfigError`` naming the file and
the field, and saying how to make it.

Why measured: the aggregation ratio, the bytes per event and the files per commit decide most of
the bill, and each depends on the code (envelope fields, the KPL framing, the writer's commit
protocol); assuming them would drift from what the code does.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sluice.core.config import config_error
from sluice.core.errors import ConfigError

__all__ = [
    "SCHEMA_VERSION",
    "BatchMeasurement",
    "CommitMeasurement",
    "JobMeasurement",
    "Measurements",
    "SourceMeasurement",
    "default_measurements_path",
    "load_measurements",
]

SCHEMA_VERSION = 1
SOURCES = ("iot", "weblog", "feed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchMeasurement(_Strict):
    """What the real edge code made of batches of ``events_per_batch`` events (KPL-aggregated)."""

    events_per_batch: int = Field(ge=1)
    batches: int = Field(ge=1)
    kinesis_records: int = Field(ge=1, description="Kinesis records of all the batches")
    kinesis_bytes: int = Field(ge=1, description="data plus partition key bytes of those records")
    on_demand_kb: int = Field(ge=1, description="records rounded up to 1 KB each, summed")
    put_units: int = Field(ge=1, description="records rounded up to 25 KB PUT units, summed")
    edge_seconds: float = Field(ge=0, description="CPU time of the edge code for all the batches")


class SourceMeasurement(_Strict):
    """One source's figures, from the seeded samples through the real edge, job and writer code."""

    events: int = Field(ge=1, description="valid events measured")
    input_bytes_per_event: float = Field(gt=0, description="raw bytes as the source sends them")
    envelope_bytes_per_event: float = Field(
        gt=0, description="one Kinesis record per event: data plus partition key bytes"
    )
    on_demand_kb_per_event: float = Field(
        gt=0, description="one record per event: its size rounded up to 1 KB, in KB"
    )
    put_units_per_event: float = Field(gt=0, description="one record per event: its PUT units")
    aggregated_bytes_per_event: float = Field(
        gt=0, description="bytes one event adds to a KPL aggregate (the largest batch measured)"
    )
    batches: tuple[BatchMeasurement, ...] = Field(min_length=1)
    edge_seconds_per_event: float = Field(
        ge=0, description="edge CPU seconds per event (the largest batch measured)"
    )
    archive_bytes_per_event: float = Field(gt=0, description="raw archive, gzipped JSON lines")
    parquet_bytes_per_event: float = Field(gt=0, description="the source's event table (Parquet)")


class CommitMeasurement(_Strict):
    """Real Iceberg commits of the stream job's writer (one flush = one commit interval)."""

    commits: int = Field(ge=1)
    events_per_commit: float = Field(gt=0)
    tables: int = Field(ge=1, description="tables in the catalog")
    tables_committed_per_commit: float = Field(ge=0, description="tables that got a snapshot")
    data_files_per_commit: float = Field(ge=0, description="data files added, every table")
    event_data_files_per_commit: float = Field(ge=0, description="data files added, event tables")
    files_written_per_commit: float = Field(
        gt=0, description="every file written (data, manifests, manifest lists, metadata): S3 PUTs"
    )
    files_read_per_commit: float = Field(
        ge=0,
        description="files opened for reading (metadata, manifests, data files scanned): a lower "
        "bound of S3 GETs",
    )
    metadata_bytes_per_commit: float = Field(ge=0, description="manifests, lists, metadata.json")
    window_bytes_per_event: float = Field(
        ge=0, description="window and dead-letter table bytes per event (live files)"
    )


class JobMeasurement(_Strict):
    """How fast the job's per-record work runs, events per second on one core of this machine."""

    stages_events_per_second: float = Field(
        gt=0, description="decode, GeoIP, filters, windows and the Iceberg writer in one process"
    )
    beam_job_events_per_second: float | None = Field(
        default=None, gt=0, description="the Beam job end to end (moto Kinesis -> Iceberg)"
    )
    pyflink_app_events_per_second: float | None = Field(
        default=None,
        gt=0,
        description="the PyFlink application (what MSF runs) on the local cluster at parallelism 1, "
        "steady (one slot, one Python worker: what one KPU at ParallelismPerKPU 1 does); from "
        "`make bench-flink-app` (reports/flink_app_bench.json)",
    )


class Measurements(_Strict):
    """Everything ``benchmarks.measure`` writes."""

    schema_version: int
    measured_at: str
    command: str
    machine: str
    notes: tuple[str, ...] = ()
    max_aggregate_bytes: int = Field(gt=0, description="data bytes of one full KPL aggregate")
    sources: dict[str, SourceMeasurement]
    commits: CommitMeasurement
    job: JobMeasurement

    def source(self, name: str) -> SourceMeasurement:
        return self.sources[name]


def default_measurements_path() -> Path:
    """``reports/measurements.json`` of the source tree this package was installed from."""
    return Path(__file__).resolve().parents[2] / "reports" / "measurements.json"


def load_measurements(path: Path | None = None) -> Measurements:
    """The measurements in ``path`` (default: ``default_measurements_path()``)."""
    where = path or default_measurements_path()
    hint = "write one with `make bench` (python -m benchmarks.measure) or pass --measurements FILE"
    try:
        data = orjson.loads(where.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no measurement file at {where}: {hint}") from None
    except (OSError, orjson.JSONDecodeError) as err:
        raise ConfigError(f"measurement file {where}: {err}") from None
    try:
        measured = Measurements.model_validate(data)
    except ValidationError as err:
        raise config_error(err, prefix=f"measurement file {where}") from None
    if measured.schema_version != SCHEMA_VERSION:
        raise ConfigError(
            f"measurement file {where}: schema_version {measured.schema_version}, this sluice "
            f"reads {SCHEMA_VERSION}: {hint}"
        )
    missing = [name for name in SOURCES if name not in measured.sources]
    if missing:
        raise ConfigError(f"measurement file {where}: no figures for {', '.join(missing)}: {hint}")
    return measured
