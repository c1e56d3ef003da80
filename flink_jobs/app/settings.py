"""The PyFlink application's settings: one typed object, read from MSF property groups.

In: a list of property groups, ``[{"PropertyGroupId": ..., "PropertyMap": {...}}, ...]``: on Amazon
Managed Service for Apache Flink the file MSF writes, ``/etc/flink/application_properties.json``;
locally (``IS_LOCAL=true``, or ``--properties FILE``) ``application_properties.json`` beside the job.
Out: a frozen, validated ``AppSettings``. Unknown groups, unknown keys, values of the wrong type and
missing required keys are one ``ConfigError`` naming the group and key.

Property values are strings (MSF stores them so); each field below converts its own. Group ids and
keys are the ones documented in ``flink_conf/README.md``; the field's ``alias`` is the key.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluice.core.errors import ConfigError

__all__ = [
    "GROUPS",
    "MSF_PROPERTIES",
    "AppSettings",
    "CoreGroup",
    "IcebergGroup",
    "InputGroup",
    "JobGroup",
    "RunOptions",
    "is_local",
    "load_app_settings",
    "properties_path",
]

MSF_PROPERTIES = Path("/etc/flink/application_properties.json")
"""Where MSF writes the application's runtime properties."""
LOCAL_PROPERTIES = "application_properties.json"
"""The local file of the same shape, beside the job's main.py."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RunOptions(_Group):
    """``kinesis.analytics.flink.run.options``: read by MSF itself to start the Python program."""

    python: str = Field(default="main.py", description="The program MSF runs (zip root).")
    jarfile: str = Field(
        default="lib/pyflink-dependencies.jar",
        description="The one shaded jar of connectors (Kinesis source, Iceberg, Hadoop, SQLite).",
    )
    pyFiles: str = Field(
        default="dep/", description="Python libraries (and the Sluice core) added to the path."
    )


class InputGroup(_Group):
    """``sluice.input``: where the job's records come from."""

    source: Literal["kinesis", "archive"] = Field(
        description="'kinesis' (the stream, production) or 'archive' (replay the raw archive files "
        "under archive.path: a bounded run, the tests' source)."
    )
    archive_path: str | None = Field(
        default=None,
        alias="archive.path",
        description="Folder holding raw/dt=.../hour=.../*.jsonl.gz (sluice.tables.archive); "
        "required when source=archive.",
    )
    archive_from: datetime | None = Field(
        default=None,
        alias="archive.from",
        description="Replay only records that arrived at or after this time (ISO-8601, UTC).",
    )
    archive_to: datetime | None = Field(
        default=None,
        alias="archive.to",
        description="Replay only records that arrived before this time (ISO-8601, UTC).",
    )
    stream_arn: str | None = Field(
        default=None,
        alias="stream.arn",
        description="Kinesis stream ARN; required when source=kinesis.",
    )
    aws_region: str | None = Field(
        default=None, alias="aws.region", description="AWS region of the stream."
    )
    aws_endpoint: str | None = Field(
        default=None,
        alias="aws.endpoint",
        description="Kinesis endpoint override (a local endpoint such as moto server); none on AWS.",
    )
    initial_position: Literal["TRIM_HORIZON", "LATEST"] = Field(
        default="TRIM_HORIZON",
        alias="initial.position",
        description="Where a shard with no checkpointed position starts.",
    )
    bounded: bool = Field(
        default=False,
        description="source=kinesis: 'true' reads each shard listed at start until it is caught "
        "up (a GetRecords call returns nothing, 0 ms behind the shard's tip), then the job "
        "finishes: the arrival-time watermark goes to the end of time, so every open window is "
        "written (as the Beam job's --stop_when_idle_seconds flushes them). For backfills and "
        "tests over a pre-filled stream; records put while it reads are included only up to "
        "the moment each shard caught up. 'false' (production): read forever. The archive is "
        "always bounded.",
    )
    records_per_call: int = Field(
        default=1_000,
        ge=1,
        le=10_000,
        alias="records.per.call",
        description="source=kinesis: GetRecords' Limit, the most records one call returns "
        "(Kinesis allows 10,000; a shard is polled at most 5 times a second).",
    )

    @field_validator("archive_from", "archive_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _required(self) -> InputGroup:
        if self.source == "archive" and not self.archive_path:
            raise ValueError("archive.path is required when source=archive")
        if self.source == "kinesis" and not self.stream_arn:
            raise ValueError("stream.arn is required when source=kinesis")
        if self.archive_from and self.archive_to and self.archive_from >= self.archive_to:
            raise ValueError("archive.from must be before archive.to")
        return self


class IcebergGroup(_Group):
    """``sluice.iceberg``: the catalog and warehouse of the six tables."""

    catalog_type: Literal["jdbc", "glue"] = Field(
        alias="catalog.type",
        description="'jdbc' (Iceberg's JdbcCatalog, locally over the SQLite file pyiceberg's SQL "
        "catalog uses) or 'glue' (AWS Glue, S3FileIO).",
    )
    warehouse: str = Field(
        description="Warehouse location: file:///folder locally, s3://bucket/prefix on AWS."
    )
    jdbc_uri: str | None = Field(
        default=None,
        alias="jdbc.uri",
        description="JDBC URL of the catalog database (jdbc:sqlite:/path/catalog.db); required "
        "when catalog.type=jdbc.",
    )
    namespace: str = Field(default="sluice", description="Namespace (Glue database) of the tables.")
    catalog_name: str = Field(
        default="sluice",
        alias="catalog.name",
        description="Catalog name. For jdbc it must be the name pyiceberg's SQL catalog uses "
        "('sluice'): the JDBC catalog keys its rows by it.",
    )
    busy_timeout_ms: int = Field(
        default=60_000,
        ge=0,
        alias="jdbc.busy-timeout-ms",
        description="SQLite: how long a commit waits for another writer's lock (the six tables "
        "commit at the same checkpoint) instead of failing with SQLITE_BUSY.",
    )

    @model_validator(mode="after")
    def _jdbc_uri(self) -> IcebergGroup:
        if self.catalog_type == "jdbc" and not self.jdbc_uri:
            raise ValueError("jdbc.uri is required when catalog.type=jdbc")
        return self


class CoreGroup(_Group):
    """``sluice.core``: the stages' settings (the fields of ``sluice.core.config.CoreSettings``)."""

    geoip_city_db: str | None = Field(
        default=None,
        alias="geoip.city.db",
        description="MaxMind City or Country database (.mmdb) as a path the TaskManagers read "
        "(on MSF: a file shipped in the zip, relative to its root); none: no GeoIP.",
    )
    geoip_asn_db: str | None = Field(
        default=None, alias="geoip.asn.db", description="MaxMind ASN database (.mmdb)."
    )
    window_seconds: int = Field(
        default=60, ge=1, le=86_400, alias="window.seconds", description="Window size."
    )
    allowed_lateness_seconds: int = Field(
        default=600,
        ge=0,
        alias="allowed.lateness.seconds",
        description="How late (by Kinesis arrival time) an event may arrive and still count in its "
        "window; a window's row is written once this long after the window ended.",
    )
    filters_file: str | None = Field(
        default=None,
        alias="filters.file",
        description="JSON file of filter rules (sluice.transform.filters), replacing the defaults.",
    )


class JobGroup(_Group):
    """``sluice.job``: how the Flink job runs."""

    checkpoint_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        alias="checkpoint.interval.seconds",
        description="Checkpoint interval, set in code only locally (MSF 2.2 refuses configuration "
        "changes in code: there it is the application's CheckpointConfiguration). Iceberg commits "
        "on each checkpoint: the tables' freshness, and files per day = 86,400 / interval x "
        "writers x active partitions.",
    )
    parallelism: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Parallelism of the stage operators, set in code only locally (on MSF: "
        "Parallelism and ParallelismPerKPU of the application).",
    )
    batch_max_records: int = Field(
        default=500,
        ge=1,
        le=100_000,
        alias="batch.max.records",
        description="Records of one shard run through the stages together (1: per record).",
    )
    batch_max_millis: int = Field(
        default=1_000,
        ge=1,
        alias="batch.max.millis",
        description="A shard's partial batch is run after this long (processing time) at most.",
    )
    out_of_orderness_seconds: int = Field(
        default=5,
        ge=0,
        alias="watermark.out-of-orderness.seconds",
        description="Kinesis source: how far arrival times may go backwards across shards; the "
        "watermark (arrival time) that closes windows trails the newest arrival by this much.",
    )
    pipeline_jars: str | None = Field(
        default=None,
        alias="pipeline.jars",
        description="Locally only, run from the repository: ';'-separated jar paths checked at "
        "start (default: build/flink/pyflink-dependencies.jar, 'make flink-jar'). They are not "
        "added to Flink's pipeline.jars: locally the shaded jar is on the cluster's classpath "
        "(flink_jobs/app/local.py says why); on MSF the zip's one jar is used.",
    )


GROUPS: dict[str, type[_Group]] = {
    "kinesis.analytics.flink.run.options": RunOptions,
    "sluice.input": InputGroup,
    "sluice.iceberg": IcebergGroup,
    "sluice.core": CoreGroup,
    "sluice.job": JobGroup,
}
"""Every property group the application knows, by its ``PropertyGroupId``."""


class AppSettings(BaseModel):
    """Everything the PyFlink application can be told, one field per property group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_options: RunOptions = Field(default_factory=RunOptions)
    input: InputGroup
    iceberg: IcebergGroup
    core: CoreGroup = Field(default_factory=CoreGroup)
    job: JobGroup = Field(default_factory=JobGroup)
    local: bool = Field(
        default=False,
        description="Running on the local cluster (IS_LOCAL=true): set checkpointing, parallelism "
        "and pipeline.jars in code, which MSF 2.2 refuses.",
    )

    def core_settings(self) -> Any:
        """The core's ``CoreSettings`` for the stages (``sluice.stream.run.StageRunner``)."""
        from sluice.core.config import load_settings

        core = self.core
        given: dict[str, Any] = {
            "window_seconds": core.window_seconds,
            "allowed_lateness_seconds": core.allowed_lateness_seconds,
            "geoip_city_db": core.geoip_city_db,
            "geoip_asn_db": core.geoip_asn_db,
            "filters_file": core.filters_file,
        }
        return load_settings(**{k: v for k, v in given.items() if v is not None})


_FIELD_OF_GROUP = {
    "kinesis.analytics.flink.run.options": "run_options",
    "sluice.input": "input",
    "sluice.iceberg": "iceberg",
    "sluice.core": "core",
    "sluice.job": "job",
}


def is_local() -> bool:
    """``IS_LOCAL=true`` (any case): the local cluster, as aws-samples' applications decide."""
    return os.environ.get("IS_LOCAL", "").strip().lower() in ("1", "true", "yes")


def properties_path(beside: Path) -> Path:
    """The properties file: ``SLUICE_APP_PROPERTIES``, else locally the file beside the job, else
    MSF's ``/etc/flink/application_properties.json``."""
    given = os.environ.get("SLUICE_APP_PROPERTIES")
    if given:
        return Path(given)
    return beside / LOCAL_PROPERTIES if is_local() else MSF_PROPERTIES


def _problem(err: ValidationError, group: str) -> str:
    parts = []
    for error in err.errors(include_url=False):
        key = ".".join(str(p) for p in error["loc"]) or "group"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{group}: {key}: {message}")
    return "; ".join(parts)


def parse_groups(groups: Any, *, local: bool, where: str = "properties") -> AppSettings:
    """``AppSettings`` from MSF's list of property groups; any problem is one ``ConfigError``."""
    if not isinstance(groups, list):
        raise ConfigError(f"{where}: expected a JSON list of {{PropertyGroupId, PropertyMap}}")
    given: dict[str, Any] = {}
    problems: list[str] = []
    for number, group in enumerate(groups):
        if not isinstance(group, dict) or set(group) != {"PropertyGroupId", "PropertyMap"}:
            problems.append(f"group {number}: expected exactly PropertyGroupId and PropertyMap")
            continue
        group_id, values = group["PropertyGroupId"], group["PropertyMap"]
        model = GROUPS.get(group_id)
        if model is None:
            known = ", ".join(GROUPS)
            problems.append(f"unknown property group {group_id!r} (known: {known})")
            continue
        if _FIELD_OF_GROUP[group_id] in given:
            problems.append(f"property group {group_id!r} given twice")
            continue
        if not isinstance(values, dict):
            problems.append(f"{group_id}: PropertyMap must be an object of strings")
            continue
        try:
            given[_FIELD_OF_GROUP[group_id]] = model.model_validate(values)
        except ValidationError as err:
            problems.append(_problem(err, group_id))
    for required in ("sluice.input", "sluice.iceberg"):
        if _FIELD_OF_GROUP[required] not in given and not any(
            p.startswith(f"{required}:") for p in problems
        ):
            problems.append(f"property group {required!r} is missing")
    if problems:
        raise ConfigError(f"invalid application properties in {where}: " + "; ".join(problems))
    return AppSettings(**given, local=local)


def load_app_settings(path: Path, *, local: bool | None = None) -> AppSettings:
    """``AppSettings`` from a properties file; a missing or malformed file is a ``ConfigError``."""
    local = is_local() if local is None else local
    try:
        groups = json.loads(path.read_text())
    except FileNotFoundError:
        hint = (
            "copy flink_conf/application_properties.local.json beside main.py"
            if local
            else "set the application's runtime properties (property groups) in MSF"
        )
        raise ConfigError(f"no application properties at {path}: {hint}") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read application properties {path}: {err}") from None
    return parse_groups(groups, local=local, where=str(path))
