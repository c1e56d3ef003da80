"""The PyFlink application's graph, top to bottom, and its start-up checks.

    user_records (sources.py: Kinesis records or the raw archive's user records)
      -> key by shard -> BatchRecords (Java, operators.py: keyed state, one frame per batch)
      -> RunStages (KPL de-aggregation -> decode -> GeoIP -> filters -> window pre-aggregation, one
         StageRunner batch)  -- side outputs: rows per event table, dead letters, partial
                                aggregates per window table
      -> key by window -> CloseWindows (Java: partials in keyed state until the window closes)
      -> MergeWindows (one row per window)
      -> INSERT INTO the six Iceberg tables (Flink's Iceberg connector; one statement set)

Exactly-once: Flink checkpoints the source positions and the Java steps' keyed state and timers
(buffered records, open windows; the Python functions keep none: PyFlink 2.2 can checkpoint a
Python function's state without the timers it registered, see operators.py); Iceberg's Flink sink writes data files and commits them when the checkpoint that covers
them completes (``notifyCheckpointComplete``). A restart resumes from the last checkpoint and the
uncommitted files of the failed attempt are never committed. No checkpoint, no data.

Window tables are append-only: each window's row is written once, when the arrival-time watermark
passes ``window_end + allowed_lateness`` (no equality deletes, which pyiceberg 0.12 cannot read).
Cost: a window's row appears ``allowed_lateness`` + up to one checkpoint interval after it ends.

Start-up errors (wrong Python, missing jars, an unreachable catalog or missing tables, for
``source=kinesis`` an unreachable endpoint or a missing stream) are one ``ConfigError`` line naming
the fix.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from flink_jobs.app.rows import COLUMNS, select_list, stream_schema
from flink_jobs.app.settings import AppSettings, IcebergGroup
from sluice.core.errors import ConfigError

__all__ = ["PYTHON", "build", "catalog_ddl", "check_python", "local_jars"]

PYTHON = (3, 12)
"""MSF's FLINK-2_2 runtime runs Python 3.12; dep/ holds cp312 wheels."""
TABLES = tuple(COLUMNS)


def check_python(version: Sequence[int] | None = None) -> None:
    """A one-line ``ConfigError`` unless this is Python 3.12 (or ``version``, for tests)."""
    version = sys.version_info[:3] if version is None else version
    if tuple(version[:2]) != PYTHON:
        found = ".".join(str(v) for v in version[:3])
        raise ConfigError(
            f"the PyFlink application needs Python {PYTHON[0]}.{PYTHON[1]} (MSF FLINK-2_2; dep/ holds "
            f"cp312 wheels), this is Python {found}: run it with .venv-flink (make flink-venv)"
        )


def local_jars(given: str | None) -> list[str]:
    """The jars a local run checks: ``pipeline.jars`` as given, else MSF's one shaded jar
    (``make flink-jar``); a missing one is a ``ConfigError`` naming the command."""
    from pathlib import Path

    from flink_jobs.jars import SHADED_JAR

    jars = [Path(p) for p in given.split(";") if p] if given else [SHADED_JAR]
    for jar in jars:
        if not jar.is_file():
            raise ConfigError(f"the jar {jar} does not exist: run 'make flink-jar'")
    return [str(j.resolve()) for j in jars]


def _with_busy_timeout(uri: str, millis: int) -> str:
    """A SQLite JDBC URL with ``busy_timeout`` (sqlite-jdbc reads pragmas from the URL)."""
    if not uri.startswith("jdbc:sqlite:") or "busy_timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}busy_timeout={millis}"


def catalog_ddl(iceberg: IcebergGroup) -> str:
    """``CREATE CATALOG`` for Flink's Iceberg connector (JDBC over SQLite, or Glue)."""
    options: dict[str, str] = {"type": "iceberg", "warehouse": iceberg.warehouse}
    if iceberg.catalog_type == "jdbc":
        assert iceberg.jdbc_uri is not None
        options.update(
            {
                "catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
                "uri": _with_busy_timeout(iceberg.jdbc_uri, iceberg.busy_timeout_ms),
                # pyiceberg's SQL catalog keeps tables and views apart in iceberg_type (schema V1).
                "jdbc.schema-version": "V1",
                # The catalog's tables exist (pyiceberg made them). Checking them reads SQLite's
                # metadata on a pooled connection whose read transaction then stays open, and
                # its later commit fails with SQLITE_BUSY once another table committed.
                "jdbc.init-catalog-tables": "false",
                # sqlite-jdbc connection properties: wait for another committer's lock, and
                # write-ahead logging so that an open reader never blocks a commit (the six
                # tables' committers commit at the same checkpoint).
                "jdbc.busy_timeout": str(iceberg.busy_timeout_ms),
            }
        )
    else:
        options.update(
            {
                "catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
                "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
            }
        )
    body = ", ".join(f"'{k}' = '{v}'" for k, v in options.items())
    return f"CREATE CATALOG `{iceberg.catalog_name}` WITH ({body})"


def _java_reason(err: BaseException) -> str:
    """The innermost Java cause of a Py4J error, on one line."""
    text = str(err)
    causes = [line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")]
    line = causes[-1] if causes else text.strip().splitlines()[0] if text.strip() else repr(err)
    return line.removeprefix("Caused by: ")[:300]


def _check_tables(t_env: Any, iceberg: IcebergGroup) -> None:
    where = f"`{iceberg.catalog_name}`.`{iceberg.namespace}`"
    try:
        found = {row[0] for row in t_env.execute_sql(f"SHOW TABLES IN {where}").collect()}
    except Exception as err:  # noqa: BLE001 - Py4J raises its own types; one line either way
        target = iceberg.jdbc_uri if iceberg.catalog_type == "jdbc" else "Glue"
        raise ConfigError(
            f"cannot reach the Iceberg catalog ({iceberg.catalog_type}, {target}): "
            f"{_java_reason(err)}: check sluice.iceberg (and that the tables were created, "
            "e.g. by 'sluice job run' or 'sluice replay' once)"
        ) from None
    missing = [t for t in TABLES if t not in found]
    if missing:
        raise ConfigError(
            f"the catalog has no table {', '.join(missing)} in namespace {iceberg.namespace!r}: "
            "create the tables first (any Sluice writer does, e.g. 'sluice replay' or "
            "'sluice job run', which call sluice.tables.catalog.ensure_tables)"
        )


def build(settings: AppSettings, env: Any = None) -> Any:
    """The job on ``env`` (a new ``StreamExecutionEnvironment`` when none); returns the statement
    set whose ``execute()`` submits it."""
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from flink_jobs.app.functions import ROUTED, MergeWindows, RouteRows, RunStages, table_tags
    from flink_jobs.app.operators import batch_records, close_windows
    from flink_jobs.app.sources import user_records

    check_python()
    if env is None:
        env = StreamExecutionEnvironment.get_execution_environment()
    if settings.local:  # MSF 2.2 refuses configuration changes in code: only locally
        # The shaded jar is on the local cluster's classpath (HADOOP_CLASSPATH when it started,
        # see flink_jobs.app.local), not in pipeline.jars: Iceberg's JDBC catalog finds the SQLite
        # driver through DriverManager, which refuses a driver of one class loader to another.
        # From an unpacked zip there is no jar manifest: `sluice flink run-local` checked the jar.
        from flink_jobs.jars import MANIFEST

        if MANIFEST.exists():
            local_jars(settings.job.pipeline_jars)
        env.enable_checkpointing(int(settings.job.checkpoint_interval_seconds * 1000))
        env.set_parallelism(settings.job.parallelism)
    t_env = StreamTableEnvironment.create(env)
    zone = str(t_env.get_config().get_local_timezone())
    if zone not in ("UTC", "Etc/UTC", "Z", "GMT", "Etc/GMT"):
        raise ConfigError(
            f"the session time zone is {zone}, the job writes UTC timestamps: run the JVMs in UTC "
            "(env.java.opts.all: -Duser.timezone=UTC) or set table.local-time-zone: UTC"
        )
    try:
        t_env.execute_sql(catalog_ddl(settings.iceberg))
    except Exception as err:  # noqa: BLE001 - one line naming the fix
        raise ConfigError(
            f"cannot create the Iceberg catalog: {_java_reason(err)}: check sluice.iceberg, and "
            "that the jars are there (make flink-jars locally; lib/ in the MSF zip)"
        ) from None
    _check_tables(t_env, settings.iceberg)

    core = settings.core_settings()
    job = settings.job
    tags = table_tags()
    records = user_records(env, settings.input, job.out_of_orderness_seconds)
    batches = batch_records(
        records,
        job.batch_max_records,
        job.batch_max_millis,
        deduplicate=settings.input.source == "archive",
    )
    staged = batches.process(RunStages(core), output_type=ROUTED).name("RunStages")
    routed = [staged]
    for table in ("iot_metrics_1m", "web_traffic_1m"):
        closed = close_windows(staged.get_side_output(tags[f"{table}.partials"]), table)
        routed.append(
            closed.process(MergeWindows(table, core.window_seconds), output_type=ROUTED).name(
                f"MergeWindows[{table}]"
            )
        )
    rows = (
        routed[0]
        .union(*routed[1:])
        .process(RouteRows(), output_type=ROUTED)
        .name("RouteRows")
        .set_parallelism(1)
    )
    streams = {table: rows.get_side_output(tags[table]) for table in TABLES}

    statements = t_env.create_statement_set()
    target = f"`{settings.iceberg.catalog_name}`.`{settings.iceberg.namespace}`"
    for table, stream in streams.items():
        view = f"rows_{table}"
        t_env.create_temporary_view(view, t_env.from_data_stream(stream, stream_schema(table)))
        statements.add_insert_sql(
            f"INSERT INTO {target}.`{table}` /*+ OPTIONS('write-parallelism'='1') */ "
            f"SELECT {select_list(table)} FROM `{view}`"
        )
    return statements
