"""The stream job's settings: one typed object for the whole deployable, every field documented.

In: flags (``sluice job run --window_seconds 60``, built from the fields by ``sluice.cli.options``),
else environment variables ``SLUICE_<FIELD>``, else the documented defaults.
Out: a frozen, validated ``JobSettings``; unknown options are refused with the closest valid name.

The job shares its parts with the other deployables instead of re-declaring them: processing
(log format, GeoIP, filter rules, window and lateness) comes from the core's ``CoreSettings``, the
table location (catalog, state folder, warehouse, namespace) from ``WarehouseSettings``; the job adds
what only it has (stream, start position, commit interval, archive, runner). The Kinesis reader and
the writer are given parameter objects derived here, never configured separately.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sluice.core.config import CoreSettings, build_settings
from sluice.stream.kinesis.settings import DEFAULT_POLL_INTERVAL_SECONDS, MAX_RECORDS_PER_CALL
from sluice.tables.warehouse import (
    DEFAULT_MAX_BUFFERED_RECORDS,
    DEFAULT_POSITIONS_COMMIT_SECONDS,
    WarehouseSettings,
)

__all__ = ["JobSettings", "load_job_settings"]

RUNNERS = ("FnApiRunner", "FlinkRunner")
"""``FnApiRunner``: Beam's in-process runner (the engine of the DirectRunner, pinned because the
DirectRunner would first try to download Prism). ``FlinkRunner``: a Flink cluster."""


class JobSettings(CoreSettings, WarehouseSettings):
    """Everything ``sluice job run`` (and ``sluice replay``) can be told."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid", frozen=True)

    stream_name: str = Field(
        default="sluice-events",
        min_length=1,
        max_length=128,
        pattern=r"^[a-zA-Z0-9_.-]+$",
        description="Kinesis stream to read (a name, not an ARN).",
    )
    start_position: Literal["trim_horizon", "latest", "at_timestamp"] = Field(
        default="trim_horizon",
        description="Where to start when the tables hold no position: trim_horizon, latest (the "
        "job's first start, recorded in the tables) or at_timestamp (with start_timestamp).",
    )
    on_new_stream: Literal["refuse", "start_from_position"] = Field(
        default="refuse",
        description="When the stream was recreated since the tables' positions were written (same "
        "name, new creation time): refuse (stop with one line) or start_from_position (forget the "
        "old stream's positions and read the new one from start_position; logged).",
    )
    start_timestamp: datetime | None = Field(
        default=None, description="ISO-8601 time for start_position=at_timestamp (naive: UTC)."
    )
    commit_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3_600,
        description="How often buffered rows are committed to Iceberg (freshness vs. small files).",
    )
    max_buffered_records: int = Field(
        default=DEFAULT_MAX_BUFFERED_RECORDS,
        ge=100,
        le=10_000_000,
        description="Most records (events and dead letters) the writer buffers: it commits early, "
        "within a commit interval, before a batch that would pass this (a larger batch alone): "
        "bounds the job's memory while it drains a backlog, at "
        "the cost of more, smaller commits then (about 2 KB of peak memory per buffered IoT record: "
        "a 1M backlog peaked at 947 MB with 100,000, 758 MB with 50,000).",
    )
    positions_commit_seconds: float = Field(
        default=DEFAULT_POSITIONS_COMMIT_SECONDS,
        ge=0,
        le=86_400,
        description="Longest a table that receives no rows goes without recording its positions "
        "(a snapshot without rows); a restart re-reads at most about this much of the stream.",
    )
    stop_when_idle_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Stop once every shard is caught up and nothing arrived for this long "
        "(default: run forever).",
    )
    max_records_per_call: int = Field(
        default=MAX_RECORDS_PER_CALL,
        ge=1,
        le=MAX_RECORDS_PER_CALL,
        description="GetRecords limit per call (Kinesis allows up to 10,000); also replay's batch size.",
    )
    poll_interval_seconds: float = Field(
        default=DEFAULT_POLL_INTERVAL_SECONDS,
        gt=0,
        le=60,
        description="Pause between polls of a caught-up shard.",
    )
    archive: bool = Field(
        default=True,
        description="Archive every raw record read under <warehouse>/raw/ for sluice replay "
        "(file:// warehouses; on AWS Kinesis Data Firehose archives). on/off.",
    )
    log_style: Literal["auto", "text", "json"] = Field(
        default="auto",
        description="The job's log lines on stderr: json (one object per line, for CloudWatch Logs "
        "Insights), text, or auto (text on a terminal, else json).",
    )
    region_name: str | None = Field(
        default=None,
        description="AWS region of the stream and catalog; default: AWS_REGION or AWS_DEFAULT_REGION.",
    )
    runner: Literal["FnApiRunner", "FlinkRunner"] = Field(
        default="FnApiRunner",
        description="Beam runner: FnApiRunner (in-process, the default) or FlinkRunner.",
    )

    @model_validator(mode="after")
    def _check_job(self) -> JobSettings:
        if (self.start_position == "at_timestamp") != (self.start_timestamp is not None):
            raise ValueError(
                "start_timestamp is needed with start_position=at_timestamp, only there"
            )
        if self.geoip_asn_db is not None and self.geoip_city_db is None:
            raise ValueError("geoip_asn_db needs geoip_city_db")
        return self

    def warehouse_settings(self) -> WarehouseSettings:
        """Where the job's tables live (the ``WarehouseSettings`` part of these settings)."""
        return WarehouseSettings.model_validate(
            {name: getattr(self, name) for name in WarehouseSettings.model_fields}
        )

    def kinesis_read(self, **start: Any) -> dict[str, Any]:
        """Keyword arguments of ``ReadFromKinesis`` for these settings (``start``: the position)."""
        return {
            "stream_name": self.stream_name,
            "max_records_per_call": self.max_records_per_call,
            "poll_interval_seconds": self.poll_interval_seconds,
            "stop_when_idle_seconds": self.stop_when_idle_seconds,
            "bundle_seconds": self.commit_interval_seconds,
            "region_name": self.region_name,
            # The FnApiRunner runs every restriction on its one worker, one after the other (it
            # cannot run an unbounded read on several: see ARCHITECTURE), so there one restriction
            # polling all shards each round keeps every shard fresh; Flink reads lineages in parallel.
            "split_by_lineage": self.runner == "FlinkRunner",
            **start,
        }


def _option(path: str) -> str:
    head = path.partition(".")[0]
    return f"--{head}" if head else "options"


def load_job_settings(overrides: dict[str, Any] | None = None) -> JobSettings:
    """``JobSettings`` from ``overrides`` (flags) over the environment; any problem is one
    ``ConfigError`` naming the options at fault."""
    return build_settings(JobSettings, overrides, prefix="invalid job options", name=_option)
