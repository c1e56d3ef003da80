"""The catalog side of the warehouse: where the tables live, opening the catalog, creating tables.

In: ``WarehouseSettings`` (catalog kind, state folder, warehouse, namespace), the AWS environment.
Out: an open catalog (SQLite over a local warehouse that refuses tables stored outside it, or Glue),
the six tables with their properties, and what the tables record for the job: the positions of the
newest snapshot that has them, the job's first start.
Why a module of its own: the writer (``sluice.tables.warehouse``), maintenance, re-drive, replay
and the CLI all open tables; only the writer writes rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from sluice.core.errors import ConfigError
from sluice.tables.specs import (
    TABLES,
)

__all__ = [
    "METADATA_VERSIONS_KEPT",
    "POSITIONS_PROPERTY",
    "START_PROPERTY",
    "TABLE_PROPERTIES",
    "LocalSqlCatalog",
    "WarehouseSettings",
    "ensure_tables",
    "first_start",
    "open_catalog",
    "resume_positions",
    "table_positions",
]

POSITIONS_PROPERTY = "sluice.positions"
START_PROPERTY = "sluice.start"
"""Table property: where the job first started reading (a timestamp, or trim_horizon), kept so that a
shard some table holds no position for is re-read from there, not from a later LATEST."""
METADATA_VERSIONS_KEPT = 10
"""Previous ``metadata.json`` files a table keeps; older ones are deleted at each commit."""
TABLE_PROPERTIES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": str(METADATA_VERSIONS_KEPT),
    "commit.retry.num-retries": "0",
}
"""Properties every table gets, new or existing (``ensure_tables``): without the first two every commit
leaves a ``metadata.json`` listing every snapshot behind for good, so metadata grows with the square of
the commits. No retries inside pyiceberg: on a concurrent commit it would re-apply the same rows and
positions on the new snapshot, never asking whether another writer wrote them meanwhile (two jobs on
one state folder doubled rows that way); the writer re-reads the table and decides again itself."""


class WarehouseSettings(BaseSettings):
    """Where the tables live. Local default: a SQLite catalog and a warehouse folder under ``.sluice/``."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore", frozen=True)

    catalog: Literal["sql", "glue"] = Field(
        default="sql", description="Catalog: 'sql' (SQLite) or 'glue'."
    )
    state_dir: Path = Field(
        default=Path(".sluice"), description="Local catalog and warehouse folder."
    )
    catalog_uri: str | None = Field(
        default=None, description="SQL catalog URI; default: SQLite in state_dir."
    )
    warehouse: str | None = Field(
        default=None, description="Warehouse location: file:// folder or s3://bucket/prefix."
    )
    namespace: str = Field(default="sluice", description="Catalog namespace (Glue database).")
    hourly_tables: tuple[str, ...] = Field(
        default=(), description="Tables partitioned by hour instead of day (high-volume ones)."
    )

    def resolved_warehouse(self) -> str:
        if self.warehouse:
            return self.warehouse
        return (self.state_dir.resolve() / "warehouse").as_uri()

    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.state_dir.resolve() / 'catalog.db'}"


def _local_folder(location: str) -> Path | None:
    """The folder of a file:// (or plain path) location; None for any other scheme."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path)).resolve()


class LocalSqlCatalog(SqlCatalog):
    """A SQL catalog over a local warehouse that only hands out tables stored inside that warehouse.

    Iceberg metadata holds absolute paths. A copied (or moved) state folder therefore still points
    at the original's files, and writing or maintaining its tables would change the original (a
    copy's ``sluice maintain`` deleted the original's files). Loading such a table stops with a
    ``ConfigError`` instead, before any file is read or written.
    """

    def __init__(self, name: str, root: Path, **properties: str) -> None:
        self.root = root
        super().__init__(name, **properties)

    def _convert_orm_to_iceberg(self, orm_table: IcebergTables) -> Table:
        self._check_inside(orm_table.table_name, orm_table.metadata_location or "")
        table = super()._convert_orm_to_iceberg(orm_table)
        self._check_inside(orm_table.table_name, table.location())
        return table

    def _check_inside(self, name: str, location: str) -> None:
        folder = _local_folder(location)
        if folder is not None and not folder.is_relative_to(self.root):
            raise ConfigError(
                f"table {name!r} of the catalog {self.properties.get('uri')} is stored at "
                f"{location}, outside this state folder's warehouse {self.root}: the state folder "
                "was copied or moved, and Iceberg metadata holds absolute paths. Use the original "
                "folder, or start an empty one and fill it with `sluice replay`"
            )


def open_catalog(settings: WarehouseSettings) -> Catalog:
    """The configured catalog. ``AWS_ENDPOINT_URL`` (a local endpoint) applies to Glue and S3 as well.

    A SQL catalog over a file:// warehouse refuses tables stored outside it (``LocalSqlCatalog``).
    """
    properties: dict[str, str] = {"warehouse": settings.resolved_warehouse()}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        properties["s3.endpoint"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        properties["s3.region"] = region
    if settings.catalog == "glue":
        from pyiceberg.catalog.glue import GlueCatalog

        if endpoint:
            properties["glue.endpoint"] = endpoint
        if region:
            properties["glue.region"] = region
        return GlueCatalog("glue", **properties)
    from sqlalchemy.exc import OperationalError

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    root = _local_folder(properties["warehouse"])
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_catalog_uri()
    for attempt in range(2):
        try:
            if root is None:
                return SqlCatalog("sluice", uri=uri, **properties)
            return LocalSqlCatalog("sluice", root, uri=uri, **properties)
        except OperationalError:
            # A new catalog's own tables, created by another process at the same moment
            # ("table iceberg_tables already exists"): the second attempt finds them.
            if attempt:
                raise
    raise AssertionError("unreachable")


def ensure_tables(catalog: Catalog, settings: WarehouseSettings) -> dict[str, Table]:
    """Create the namespace and any missing table (format v2); return every table by name.

        Tables that exist get ``TABLE_PROPERTIES`` and the spec's columns where they lack them (schema
    evolution: a table created by an older Sluice gains the new optional columns). Safe when several processes
        start on a new catalog at once: a table another one created first is loaded instead.
    """
    try:
        catalog.create_namespace(settings.namespace)
    except NamespaceAlreadyExistsError:
        pass
    except Exception:  # a backend's own error when another process won the race
        if not catalog.namespace_exists(settings.namespace):
            raise
    tables: dict[str, Table] = {}
    for name, definition in TABLES.items():
        identifier = f"{settings.namespace}.{name}"
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            granularity: Literal["day", "hour"] = (
                "hour" if name in settings.hourly_tables else "day"
            )
            try:
                table = catalog.create_table(
                    identifier,
                    schema=definition.schema,
                    partition_spec=definition.partition_spec(granularity),
                    properties={
                        "format-version": "2",
                        "comment": definition.description,
                        **TABLE_PROPERTIES,
                    },
                )
            except TableAlreadyExistsError:  # another process created it in the meantime
                table = catalog.load_table(identifier)
        table = _add_missing_columns(table, definition.schema)
        tables[name] = _set_missing_properties(table, TABLE_PROPERTIES)
    return tables


def _add_missing_columns(table: Table, schema: Schema) -> Table:
    """Schema evolution of a table created by an older Sluice: every column of ``schema`` it lacks
    is added (optional, so old rows read NULL); nothing is ever removed, renamed or retyped. A
    concurrent change (another process adding them too) is re-read once."""
    for attempt in range(2):
        present = {field.name for field in table.schema().fields}
        missing = [field for field in schema.fields if field.name not in present]
        if not missing:
            break
        try:
            with table.update_schema() as update:
                for field in missing:
                    update.add_column(field.name, field.field_type, doc=field.doc)
        except CommitFailedException:
            if attempt:
                raise
            table = table.refresh()
    return table


def _set_missing_properties(table: Table, properties: Mapping[str, str]) -> Table:
    """Give ``table`` every one of ``properties`` it lacks; a concurrent change is re-read once."""
    for attempt in range(2):
        missing = {k: v for k, v in properties.items() if table.properties.get(k) != v}
        if not missing:
            break
        try:
            with table.transaction() as tx:
                tx.set_properties(missing)
        except CommitFailedException:
            if attempt:
                raise
            table = table.refresh()
    return table


def table_positions(table: Table) -> dict[str, int]:
    """The source positions committed with the table's newest snapshot that records them."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if POSITIONS_PROPERTY in props:
            return {shard: int(seq) for shard, seq in json.loads(props[POSITIONS_PROPERTY]).items()}
        snapshot = (
            table.snapshot_by_id(snapshot.parent_snapshot_id)
            if snapshot.parent_snapshot_id
            else None
        )
    return {}


def resume_positions(positions: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per shard, where a job resumes: after the smallest position over the tables' ``positions``.

    A shard missing from any table is left out: it is read from the configured start, and the
    tables that have it skip what they hold.
    """
    held = list(positions)
    shards = set.intersection(*(set(p) for p in held)) if held else set()
    return {shard: min(p[shard] for p in held) for shard in sorted(shards)}


def first_start(tables: Mapping[str, Table], resolved: str, *, replace: bool = False) -> str:
    """The start every table agreed on at the job's first run, recording ``resolved`` where missing.

    ``resolved`` is the configured start made absolute: ``trim_horizon`` or an epoch-seconds
    timestamp (LATEST resolved to the moment of the first start). Tables that already hold a start
    keep it (the earliest wins if a crash, or two jobs starting together, left them different); the
    rest get that value. ``replace``: every table gets ``resolved`` (a recreated stream read anew).
    """
    for attempt in range(2):
        recorded = [
            t.properties[START_PROPERTY] for t in tables.values() if START_PROPERTY in t.properties
        ]
        start = _earliest(recorded) if recorded and not replace else resolved
        try:
            for table in tables.values():
                if table.properties.get(START_PROPERTY) != start:
                    with table.transaction() as tx:
                        tx.set_properties({START_PROPERTY: start})
            return start
        except CommitFailedException:  # another job recorded its start meanwhile: agree with it
            if attempt:
                raise
            for table in tables.values():
                table.refresh()
    return start


def _earliest(starts: Iterable[str]) -> str:
    values = list(starts)
    if "trim_horizon" in values:
        return "trim_horizon"
    return min(values, key=float)
