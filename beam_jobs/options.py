"""The stream job's options: a ``PipelineOptions`` subclass, every option documented, validated at start.

Each option can be given as a flag (``--window_seconds 60``) or, when the flag is absent, as an
environment variable ``SLUICE_<OPTION>`` (``SLUICE_WINDOW_SECONDS=60``); otherwise the documented
default applies. ``JobSettings.from_options`` validates the lot with pydantic, so a bad value stops the
job before it reads anything, with a message naming the option.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from apache_beam.options.pipeline_options import PipelineOptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.core.config import config_error

# (option, type, default, help). One table drives the flags, the environment and the docs.
OPTIONS: tuple[tuple[str, type, Any, str], ...] = (
    ("stream_name", str, "sluice-events", "Kinesis stream to read."),
    ("start_position", str, "trim_horizon",
     "Where to start when the tables hold no position: trim_horizon, latest or at_timestamp."),
    ("start_timestamp", str, None, "ISO-8601 time for start_position=at_timestamp."),
    ("window_seconds", int, 60, "Tumbling event-time window size."),
    ("allowed_lateness_seconds", int, 600,
     "How long after its window ends an event may arrive and still update it; later: too_late."),
    ("commit_interval_seconds", float, 60.0,
     "How often buffered rows are committed to Iceberg (freshness vs. small files)."),
    ("stop_when_idle_seconds", float, None,
     "Stop once every shard is caught up and nothing arrived for this long (default: run forever)."),
    ("max_records_per_call", int, 10_000, "GetRecords limit per call (Kinesis allows up to 10,000)."),
    ("poll_interval_seconds", float, 0.2, "Pause between polls of a caught-up shard."),
    ("geoip_city_db", str, None, "MaxMind City/Country database (.mmdb); none: no GeoIP."),
    ("geoip_asn_db", str, None, "MaxMind ASN database (.mmdb)."),
    ("catalog", str, "sql", "Iceberg catalog: sql (SQLite, local) or glue."),
    ("state_dir", str, ".sluice", "Local folder of the SQLite catalog and warehouse."),
    ("warehouse", str, None, "Warehouse location (file:// or s3://); default: under state_dir."),
    ("namespace", str, "sluice", "Catalog namespace (Glue database)."),
)  # fmt: skip


def _env_default(name: str, kind: type, default: Any) -> Any:
    value = os.environ.get(f"SLUICE_{name.upper()}")
    return default if value is None else value


def _option(path: str) -> str:
    return f"--{path or 'options'}"


class SluiceJobOptions(PipelineOptions):
    """Options of ``sluice job run``; ``--help`` lists them with their defaults."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        for name, kind, default, help_text in OPTIONS:
            parser.add_argument(
                f"--{name}",
                type=kind,
                default=_env_default(name, kind, default),
                help=f"{help_text} (env SLUICE_{name.upper()}; default: {default})",
            )


class JobSettings(BaseModel):
    """The validated options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_name: str = Field(min_length=1, max_length=128)
    start_position: Literal["trim_horizon", "latest", "at_timestamp"]
    start_timestamp: datetime | None = None
    window_seconds: int = Field(ge=1, le=86_400)
    allowed_lateness_seconds: int = Field(ge=0)
    commit_interval_seconds: float = Field(gt=0)
    stop_when_idle_seconds: float | None = Field(default=None, gt=0)
    max_records_per_call: int = Field(ge=1, le=10_000)
    poll_interval_seconds: float = Field(ge=0)
    geoip_city_db: Path | None = None
    geoip_asn_db: Path | None = None
    catalog: Literal["sql", "glue"]
    state_dir: Path
    warehouse: str | None = None
    namespace: str = Field(min_length=1)
    archive: bool = True

    @model_validator(mode="after")
    def _check(self) -> JobSettings:
        if self.start_position == "at_timestamp" and self.start_timestamp is None:
            raise ValueError("start_position=at_timestamp needs start_timestamp")
        if self.geoip_asn_db is not None and self.geoip_city_db is None:
            raise ValueError("geoip_asn_db needs geoip_city_db")
        return self

    @classmethod
    def from_options(cls, options: PipelineOptions) -> JobSettings:
        values = options.view_as(SluiceJobOptions).get_all_options()
        try:
            return cls.model_validate({name: values.get(name) for name, *_ in OPTIONS})
        except ValidationError as err:
            raise config_error(err, prefix="invalid job options", name=_option) from None
