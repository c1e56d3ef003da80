"""``sluice query`` runs one read-only query in a locked DuckDB session; ``--unsafe`` runs any SQL.

Each hostile probe (a file read, a file written over the catalog, ATTACH, several statements, an
extension install, a setting turned back on) is refused with one line and exit 2, leaves the
catalog's bytes as they were and shows nothing of the file it aimed at (subprocesses, as a user
runs them, with HOME and the working directory in a temporary folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest

from sluice.analysts.sql_tree import lock_down, read_only_refusal, session
from sluice.core.contracts import IotReading
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sluice-probe-secret-7f3a9c"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def write_readings(state: Path) -> None:
    """Six readings of one device, an hour on 2026-11-26, through the exactly-once writer."""
    settings = WarehouseSettings(state_dir=state)
    writer = ExactlyOnceWriter(ensure_tables(open_catalog(settings), settings), 60)
    records = []
    for i in range(6):
        when = T0 + timedelta(minutes=10 * i)
        reading = IotReading(device_id="d1", event_time=when, metrics={"t": float(i)})
        records.append(InputRecord(i, 0, when.timestamp(), encode(wrap_reading(reading, when))))
    writer.add(window_batch(decode_batch("s", records), 60, 600))
    writer.flush()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with six readings, a secret file beside it, and an empty home."""
    root = tmp_path_factory.mktemp("guard")
    write_readings(root / "state")
    (root / "secret.txt").write_text(f"{SECRET}\n")
    (root / "home").mkdir()
    (root / "work").mkdir()
    return root


def sluice(place: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HOME": str(place / "home"), "SLUICE_PROBE": SECRET}
    return subprocess.run(
        [sys.executable, "-m", "sluice", "query", "--state-dir", str(place / "state"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=place / "work",  # DuckDB's spill folder (.tmp) is relative to it
    )


PROBES = [
    ("SELECT * FROM read_text('/proc/self/environ')", "Permission Error"),
    ("SELECT content FROM read_text('{secret}')", "Permission Error"),
    ("SELECT * FROM read_csv('{secret}', header = false)", "Permission Error"),
    ("SELECT * FROM '{secret}'", "unknown table"),
    ("SELECT * FROM glob('{root}/*')", "Permission Error"),
    ("SELECT * FROM 'https://example.invalid/x.parquet'", "Permission Error"),
    ("SELECT * FROM read_xlsx('{secret}')", "excel extension"),  # not auto-installed
    ("COPY (SELECT 'x') TO '{catalog}'", "COPY is not a read-only query"),
    ("COPY (SELECT 'x') TO '{catalog}' (FORMAT csv)", "COPY is not a read-only query"),
    ("WITH x AS (COPY (SELECT 'x') TO '{catalog}') SELECT * FROM x", "a query holding COPY"),
    ("EXPLAIN ANALYZE COPY (SELECT 'x') TO '{catalog}'", "only EXPLAIN [ANALYZE] of a query"),
    ("EXPORT DATABASE '{root}/export'", "EXPORT is not a read-only query"),
    ("ATTACH '{catalog}' AS c", "ATTACH is not a read-only query"),
    ("ATTACH ':memory:' AS m", "ATTACH is not a read-only query"),
    ("SELECT 1; SELECT 2", "one statement at a time, this SQL has 2"),
    ("SELECT 1; COPY (SELECT 'x') TO '{catalog}'", "one statement at a time"),
    ("INSTALL httpfs", "INSTALL or LOAD is not a read-only query"),
    ("LOAD httpfs", "INSTALL or LOAD is not a read-only query"),
    ("SET enable_external_access = true", "SET is not a read-only query"),
    ("RESET lock_configuration", "SET is not a read-only query"),
    ("PRAGMA enable_profiling", "PRAGMA is not a read-only query"),
    ("CALL pragma_version()", "CALL is not a read-only query"),
    ("CREATE TABLE t AS SELECT 1", "CREATE is not a read-only query"),
    ("CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE is not a read-only query"),
]


@pytest.mark.parametrize(("probe", "message"), PROBES, ids=[p for p, _ in PROBES])
def test_a_probe_is_refused_in_one_line_and_changes_nothing(
    place: Path, probe: str, message: str
) -> None:
    catalog = place / "state" / "catalog.db"
    before = catalog.read_bytes()
    sql = probe.format(secret=place / "secret.txt", catalog=catalog, root=place)
    proc = sluice(place, sql)
    assert proc.returncode == 2, proc
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr
    assert catalog.read_bytes() == before
    assert not (place / "export").exists() and not (place / "home" / ".duckdb").exists()
    assert sorted(p.name for p in (place / "state").iterdir()) == ["catalog.db", "warehouse"]


def test_a_refused_statement_reads_no_table(tmp_path: Path) -> None:
    """Refused before any table is read: a table whose data is gone does not even come up."""
    write_readings(tmp_path / "state")
    for data_file in (tmp_path / "state" / "warehouse").rglob("iot_readings/data/**/*.parquet"):
        data_file.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "query", "--state-dir", str(tmp_path / "state"),
         "COPY (SELECT * FROM iot_readings) TO 'out.csv'"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("sluice: query refused: COPY is not")
    assert not (tmp_path / "out.csv").exists()


def test_the_session_is_locked(place: Path) -> None:
    names = [
        "enable_external_access", "autoload_known_extensions", "autoinstall_known_extensions",
        "python_enable_replacements", "lock_configuration",
    ]  # fmt: skip
    sql = "SELECT " + ", ".join(f"current_setting('{n}') AS {n}" for n in names)
    proc = sluice(place, "--format", "json", sql)
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout) == dict(zip(names, [False] * 4 + [True], strict=True))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) AS n FROM iot_readings",
        "WITH r AS (SELECT * FROM iot_readings) SELECT count(*) AS n FROM r",
        "FROM iot_readings SELECT count(*) AS n",
        "VALUES (6)",
        "DESCRIBE iot_readings",
        "SHOW iot_readings",
        "SUMMARIZE iot_readings",
        "EXPLAIN SELECT count(*) FROM iot_readings",
        "EXPLAIN ANALYZE SELECT count(*) FROM iot_readings",
        "-- a comment\nSELECT count(*) AS n FROM iot_readings WHERE event_time >= '2026-11-26';",
    ],
)
def test_read_only_queries_run(place: Path, sql: str) -> None:
    proc = sluice(place, "--format", "json", sql)
    assert proc.returncode == 0, proc.stderr
    rows = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert rows
    if "n" in rows[0] or sql.startswith("VALUES"):
        assert list(rows[0].values()) == [6]


def test_unsafe_restores_duckdb_file_functions_and_several_statements(place: Path) -> None:
    secret = place / "secret.txt"
    proc = sluice(
        place, "--unsafe", "--format", "json", f"SELECT content FROM read_text('{secret}')"
    )
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout) == {"content": f"{SECRET}\n"}
    out = place / "work" / "copy.csv"
    proc = sluice(
        place, "--unsafe", "--format", "csv",
        f"COPY (SELECT 1 AS a) TO '{out}'; SELECT count(*) AS n FROM iot_readings",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "n\n6\n" and out.read_text() == "a\n1\n"


def test_help_says_what_unsafe_allows(place: Path) -> None:
    text = " ".join(sluice(place, "--help").stdout.split())
    assert "--unsafe run any DuckDB SQL" in text and "any file you can" in text


@pytest.mark.parametrize(
    "query", sorted((ROOT / "infra" / "athena" / "queries").glob("*.sql")), ids=lambda p: p.stem
)
def test_the_example_queries_are_read_only(query: Path) -> None:
    """They run in full through ``sluice query`` in ``tests/e2e/test_athena_queries.py``."""
    con = session()
    lock_down(con)
    assert read_only_refusal(con, query.read_text()) is None


def test_lock_down_keeps_registered_tables_and_refuses_settings() -> None:
    import pyarrow as pa

    con = session()
    lock_down(con)
    con.register("late", pa.table({"a": [1, 2]}))  # the tables are registered after the lock
    assert con.sql("SELECT sum(a) FROM late").fetchall() == [(3,)]
    for sql in ("SET enable_external_access = true", "RESET lock_configuration"):
        with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
            con.execute(sql)
    assert con.sql("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
