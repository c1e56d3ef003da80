"""What ``sluice cost`` is asked about: a workload, its retention and the pipeline's settings.

One typed settings object (``CostSettings``): every field documented, with a default; set by flag
(``sluice cost --iot_events_per_second 2000``) or environment variable ``SLUICE_<FIELD>``. Fields the
pipeline's own deployables share keep their names (``SLUICE_COMMIT_INTERVAL_SECONDS`` is the job's
commit interval, ``SLUICE_AGGREGATION`` the edges' KPL switch), so an estimate made in a configured
environment prices what that environment runs. Negative, non-numeric or unknown values are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CostSettings", "KinesisMode", "Partitioning", "Processing"]

KinesisMode = Literal["on-demand", "provisioned"]
Partitioning = Literal["none", "day", "hour"]
Processing = Literal["flink", "lambda"]


class CostSettings(BaseSettings):
    """A workload to price. Rates are averages over the month."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid", frozen=True)

    measurements: Path | None = Field(
        default=None,
        description="Measurement file written by `make bench` (python -m benchmarks.measure); "
        "default: reports/measurements.json of the source tree.",
    )
    iot_events_per_second: float = Field(default=2000, ge=0, description="IoT readings per second.")
    iot_readings_per_request: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="Readings per HTTP request to the IoT edge (a device or gateway that batches); "
        "one request is one API Gateway call, one Lambda invocation and one KPL batch.",
    )
    weblog_lines_per_second: float = Field(
        default=500, ge=0, description="nginx access-log lines per second."
    )
    weblog_lines_per_invocation: int = Field(
        default=5000,
        ge=1,
        le=10_000_000,
        description="Log lines per log-edge invocation (an S3 log file or a CloudWatch Logs batch); "
        "published in batches of at most 5,000 lines.",
    )
    feed_polls_per_minute: float = Field(
        default=1,
        ge=0,
        description="Feed polls per minute, all feeds together (one invocation each).",
    )
    feed_items_per_poll: float = Field(
        default=10, ge=0, description="New or updated feed items a poll emits."
    )
    aggregation: bool = Field(
        default=True, description="KPL aggregation at the edges (the edges' SLUICE_AGGREGATION)."
    )
    iot_lambda_memory_mb: int = Field(
        default=1024, ge=128, le=10_240, description="IoT edge Lambda memory."
    )
    weblog_lambda_memory_mb: int = Field(
        default=1769, ge=128, le=10_240, description="Log edge Lambda memory."
    )
    feed_lambda_memory_mb: int = Field(
        default=256, ge=128, le=10_240, description="Feed poller Lambda memory."
    )
    lambda_io_ms_per_invocation: float = Field(
        default=20,
        ge=0,
        description="Assumed, not measured: milliseconds an edge invocation waits for PutRecords "
        "(a round trip within the region); added to the measured CPU time.",
    )
    feed_fetch_ms: float = Field(
        default=500,
        ge=0,
        description="Assumed, not measured: milliseconds a poll waits for the feed's HTTP response "
        "and its DynamoDB checkpoint.",
    )
    kinesis_mode: KinesisMode = Field(
        default="on-demand",
        description="Capacity mode counted in the total; the other is priced beside it.",
    )
    kinesis_retention_days: float = Field(
        default=1, ge=1, le=365, description="Kinesis retention (1 = the included 24 hours)."
    )
    kinesis_consumers: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Consumers reading the whole stream (the job and Firehose): on-demand bills "
        "each one's reads; provisioned shards share 2 MB/s of reads among them.",
    )
    peak_factor: float = Field(
        default=1.0,
        ge=1,
        le=100,
        description="Peak over average throughput: provisioned shards and Flink KPUs are sized "
        "for the average times this (on-demand streams scale by themselves).",
    )
    raw_archive_retention_days: float = Field(
        default=90, ge=0, description="Days the raw archive (Firehose to S3) is kept."
    )
    warehouse_retention_days: float = Field(
        default=365, ge=0, description="Days of rows the Iceberg tables keep."
    )
    snapshot_retention_days: float = Field(
        default=7,
        ge=0,
        description="Days of snapshots kept (sluice maintain --expire-older-than): their metadata "
        "files are stored.",
    )
    commit_interval_seconds: float = Field(
        default=60,
        gt=0,
        le=86_400,
        description="The job's commit interval (SLUICE_COMMIT_INTERVAL_SECONDS): one flush per "
        "interval, each writing the measured files.",
    )
    firehose_buffer_seconds: int = Field(
        default=300, ge=0, le=900, description="Firehose buffer interval (archive objects)."
    )
    firehose_buffer_mb: int = Field(
        default=128, ge=1, le=128, description="Firehose buffer size (archive objects)."
    )
    firehose_dynamic_partitioning: bool = Field(
        default=True,
        description="Firehose dynamic partitioning by arrival hour (the archive layout).",
    )
    firehose_rounding: Literal["kinesis_record", "user_record"] = Field(
        default="kinesis_record",
        description="What Firehose rounds up to 5 KB: each Kinesis record it reads, or each user "
        "record after KPL de-aggregation (not confirmed which; user_record shows the worst case).",
    )
    msf_events_per_kpu: float | None = Field(
        default=None,
        gt=0,
        description="Events per second one KPU (1 vCPU) processes; default: the measured job "
        "(the PyFlink application at parallelism 1 when measured, else the Beam job end to end, "
        "else its stages in one process).",
    )
    processing: Processing = Field(
        default="flink",
        description="Where the stages run (the deploy parameter Processing): flink (MSF) or lambda "
        "(the transform Lambda); the other is priced beside it, and the crossover is printed.",
    )
    transform_lambda_memory_mb: int = Field(
        default=1769,
        ge=512,
        le=10_240,
        description="Transform Lambda memory (TransformMemorySize).",
    )
    transform_batch_window_seconds: float = Field(
        default=60,
        ge=0,
        le=300,
        description="The mapping's batching window (TransformBatchWindowSeconds): a shard with "
        "records is invoked about once per window, so each invocation is one commit.",
    )
    transform_batch_size: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Kinesis records per invocation at most (TransformBatchSize); a 6 MB payload "
        "is the other limit.",
    )
    transform_shards: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Shards the mapping invokes for (one invocation per shard at a time); default: "
        "the provisioned shard count, and at least 4 on demand (what an on-demand stream starts with).",
    )
    transform_cpu_us_per_event: float = Field(
        default=233,
        gt=0,
        description="CPU time per event on one vCPU: every stage and the writer (measured: "
        "python -m benchmarks.transform_lambda, reports/transform_lambda.json, 2026-12-01).",
    )
    transform_fixed_cpu_ms: float = Field(
        default=33,
        ge=0,
        description="CPU time per invocation besides the events: loading six tables, the owner "
        "check, a commit (measured as transform_cpu_us_per_event, local SQLite catalog).",
    )
    transform_commit_wait_ms: float = Field(
        default=1500,
        ge=0,
        description="Assumed, not measured: milliseconds an invocation waits for Glue and S3 "
        "(six table loads, up to six commits of a few files each).",
    )
    athena_queries_per_day: float = Field(default=100, ge=0, description="Athena queries per day.")
    athena_query_hours: float = Field(
        default=1, gt=0, description="Hours of event time each query reads (e.g. the last hour)."
    )
    athena_partitioning: Partitioning = Field(
        default="day",
        description="Event-table partitions: 'day' (the default tables), 'hour' "
        "(WarehouseSettings.hourly_tables) or 'none'; a query reads every partition its range touches.",
    )
    athena_column_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Fraction of an event table's bytes a query's columns hold (Parquet reads only "
        "the columns named); 1 = all columns.",
    )
