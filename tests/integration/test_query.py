"""``sluice query`` and ``sluice tables``: predicate push-down, file pruning, output formats, errors."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sluice.analysts.athena import all_ddl
from sluice.analysts.pruning import extract_bounds, tables_named_in
from sluice.core.contracts import IotReading
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
TS = "TIMESTAMP '2026-11-26 12:00:00'"
TS2 = "TIMESTAMP '2026-11-26 13:00:00'"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            f"SELECT * FROM web_requests WHERE event_time >= {TS} AND event_time < {TS2}",
            {"web_requests": [(">=", "2026-11-26 12:00"), ("<", "2026-11-26 13:00")]},
        ),
        (
            "SELECT * FROM web_traffic_1m w WHERE w.window_start BETWEEN '2026-11-26' AND "
            "'2026-11-27T00:00:00Z' AND (w.path = '/' OR w.path = '/a')",
            {"web_traffic_1m": [(">=", "2026-11-26 00:00"), ("<=", "2026-11-27 00:00")]},
        ),
        (
            "select * from dead_letters where first_seen = timestamp '2026-11-26 12:00:00 UTC'",
            {"dead_letters": [("=", "2026-11-26 12:00")]},
        ),
        (
            "SELECT * FROM iot_metrics_1m WHERE window_start > current_timestamp - INTERVAL '1' DAY",
            {"iot_metrics_1m": [(">", "2026-11-25 18:00")]},
        ),
        (  # a lower bound from the clock is safe; an upper one is not (DuckDB reads it later)
            "SELECT * FROM iot_metrics_1m WHERE window_start <= current_timestamp",
            {},
        ),
        (  # the predicate of a joined table goes to that table only, by alias
            f"SELECT * FROM iot_readings AS r JOIN iot_metrics_1m m ON r.device_id = m.device_id "
            f"WHERE m.window_start >= {TS} AND r.device_id = 'd1'",
            {"iot_metrics_1m": [(">=", "2026-11-26 12:00")]},
        ),
        (  # in a CTE, the block that reads the table owns the predicate
            f"WITH x AS (SELECT * FROM feed_items WHERE event_time < {TS}) SELECT count(*) FROM x",
            {"feed_items": [("<", "2026-11-26 12:00")]},
        ),
        ("SELECT * FROM web_requests WHERE event_time >= 'yesterday'", {}),  # unreadable literal
        (f"SELECT * FROM web_requests WHERE event_time >= {TS} OR status = 500", {}),
        (f"SELECT * FROM web_requests WHERE NOT (event_time >= {TS})", {}),
        (  # parentheses around an AND change nothing: the term still filters every row
            f"SELECT * FROM web_requests WHERE (event_time >= {TS} AND status = 1)",
            {"web_requests": [(">=", "2026-11-26 12:00")]},
        ),
        (f"SELECT count_if(event_time >= {TS}) FROM web_requests", {}),
        (f"SELECT CASE WHEN event_time >= {TS} THEN 1 END FROM web_requests", {}),
        (f"SELECT * FROM web_requests a, web_requests b WHERE a.event_time >= {TS}", {}),
        (  # event_time is in both tables: ambiguous when unqualified
            f"SELECT * FROM web_requests, dead_letters WHERE event_time >= {TS}",
            {},
        ),
        (  # correlated: the outer table's column in a subquery's WHERE
            f"SELECT (SELECT count(*) FROM dead_letters d WHERE r.event_time >= {TS}) "
            "FROM web_requests r",
            {},
        ),
        (f"SELECT * FROM web_requests WHERE status >= {TS}", {}),  # not the time column
        (f"SELECT * FROM web_requests WHERE event_time >= {TS} + INTERVAL 1 DAY", {}),
        (f"SELECT * FROM web_requests WHERE 1 + event_time >= {TS}", {}),
        ("SELECT * FROM web_requests WHERE event_time >= '2026-11-26'::DATE", {}),
        (f"SELECT * FROM web_requests WHERE ingest_time >= {TS}", {}),  # not the partition source
        (
            f"SELECT * FROM web_requests WHERE path IS NOT NULL AND event_time >= {TS}",
            {"web_requests": [(">=", "2026-11-26 12:00")]},
        ),
        # Regression: DuckDB drops a UTC offset in a TIMESTAMP literal (a TIMESTAMP has no zone) and
        # applies it in a TIMESTAMPTZ literal or a plain string (cast to the column's TIMESTAMPTZ).
        (
            "SELECT * FROM web_requests WHERE event_time >= TIMESTAMP '2026-12-01 03:00:00-06:00'",
            {"web_requests": [(">=", "2026-12-01 03:00")]},
        ),
        (
            "SELECT * FROM web_requests WHERE event_time >= TIMESTAMPTZ '2026-12-01 03:00:00-06:00'",
            {"web_requests": [(">=", "2026-12-01 09:00")]},
        ),
        (
            "SELECT * FROM web_requests WHERE event_time < '2026-12-01 03:00:00+05:30'",
            {"web_requests": [("<", "2026-11-30 21:30")]},
        ),
        (
            "SELECT * FROM web_requests WHERE event_time >= TIMESTAMPTZ '2026-12-01 03:00 America/Chicago'",
            {"web_requests": [(">=", "2026-12-01 09:00")]},
        ),
        # Regression: a dollar-quoted string is one string to DuckDB, quotes and dashes included.
        (  # DuckDB reads (event_time >= TS AND path <> ' ') OR status = 200, then a comment
            f"SELECT * FROM web_requests WHERE event_time >= {TS} AND path <> $$ ' $$ "
            "OR status = 200 --'",
            {},
        ),
        (
            f"SELECT * FROM web_requests WHERE path <> $q$it's -- $q$ AND event_time >= {TS}",
            {"web_requests": [(">=", "2026-11-26 12:00")]},
        ),
        (
            "SELECT * FROM dead_letters WHERE first_seen >= $$2026-11-26 12:00:00+01$$",
            {"dead_letters": [(">=", "2026-11-26 11:00")]},
        ),
        (  # the literal is written reversed: the bound is the same
            f"SELECT * FROM web_requests WHERE {TS} > event_time",
            {"web_requests": [("<", "2026-11-26 12:00")]},
        ),
        (  # NOT elsewhere does not make this AND term any less certain
            f"SELECT * FROM web_requests WHERE NOT status = 500 AND event_time >= {TS}",
            {"web_requests": [(">=", "2026-11-26 12:00")]},
        ),
        (  # a CTE named like a table hides it
            f"WITH web_requests AS (SELECT * FROM dead_letters) "
            f"SELECT * FROM web_requests WHERE event_time >= {TS}",
            {},
        ),
        (  # a table read through a string is a read this module cannot see
            f"SELECT * FROM web_requests WHERE event_time >= {TS} "
            "UNION ALL SELECT * FROM query_table('web_requests')",
            {},
        ),
        (  # rows pair by position: fewer rows on one side change the others
            f"SELECT * FROM web_requests w POSITIONAL JOIN dead_letters d WHERE w.event_time >= {TS}",
            {},
        ),
        (  # current_timestamp is a column name to DuckDB: here it is the select alias
            "SELECT event_time AS current_timestamp FROM web_requests "
            "WHERE event_time >= current_timestamp - INTERVAL 1 DAY",
            {},
        ),
        (f"SELECT * FROM web_requests WHERE event_time >= {TS}; SELECT 1", {}),
        ("SELECT * FROM web_requests WHERE event_time >= TIMESTAMP_NS '2026-11-26'", {}),
        ("SELECT * FROM web_requests WHERE event_time >= 'infinity'", {}),
        ("SELECT * FROM web_requests WHERE event_time >= ", {}),  # a syntax error
        # Regression: a bound past Python's year 9999 (DuckDB's reach 294247) is not pushed down,
        # and a constant nested deeper than orjson writes is not valued: no bound, no error.
        ("SELECT * FROM web_requests WHERE event_time < '10000-01-01'", {}),
        (
            "SELECT * FROM web_requests WHERE event_time BETWEEN '2026-11-26' AND '10000-01-01'",
            {"web_requests": [(">=", "2026-11-26 00:00")]},
        ),
        (
            "SELECT * FROM web_requests WHERE event_time >= now()" + " - INTERVAL 1 SECOND" * 100,
            {},
        ),
    ],
)
def test_extract_bounds(sql: str, expected: dict[str, list[tuple[str, str]]]) -> None:
    found = extract_bounds(sql, now=NOW)
    assert {
        table: [(b.op, b.value.strftime("%Y-%m-%d %H:%M")) for b in bounds]
        for table, bounds in found.items()
    } == expected
    for bounds in found.values():
        assert all(b.value.tzinfo is not None for b in bounds)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM web_requests w JOIN DEAD_LETTERS USING (event_id)",
            ["web_requests", "dead_letters"],
        ),
        # names in strings, comments, dollar quotes and aliases are not table references
        (
            "SELECT 'iot_readings', $$feed_items$$ AS web_traffic_1m /* iot_metrics_1m */ "
            "FROM dead_letters -- web_requests",
            ["dead_letters"],
        ),
        ("SELECT * FROM (SELECT 1) x, LATERAL (SELECT * FROM feed_items) y", ["feed_items"]),
        ("SUMMARIZE iot_readings", ["iot_readings"]),
        # what DuckDB cannot serialize to JSON falls back to a word match of the text
        ("EXPLAIN SELECT * FROM iot_readings", ["iot_readings"]),
        ("PIVOT web_traffic_1m ON path USING sum(requests)", ["web_traffic_1m"]),
        ("SELECT * FROM iot_readings WHERE", ["iot_readings"]),
    ],
)
def test_tables_named_in(sql: str, expected: list[str]) -> None:
    assert sorted(tables_named_in(sql)) == sorted(expected)


def _readings_over_days(days: int, per_day: int) -> list[InputRecord]:
    records = []
    seq = 0
    for day in range(days):
        for i in range(per_day):
            when = T0 - timedelta(days=day) + timedelta(minutes=20 * i)
            reading = IotReading(device_id="d1", event_time=when, metrics={"t": float(i)})
            arrival = when + timedelta(seconds=2)
            records.append(
                InputRecord(seq, 0, arrival.timestamp(), encode(wrap_reading(reading, arrival)))
            )
            seq += 1
    return records


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Readings on three days (12:00, 12:20, 12:40 each), written by the exactly-once writer."""
    state = tmp_path_factory.mktemp("query") / "state"
    settings = WarehouseSettings(state_dir=state)
    catalog = open_catalog(settings)
    writer = ExactlyOnceWriter(ensure_tables(catalog, settings), 60)
    writer.add(window_batch(decode_batch("s", _readings_over_days(3, 3)), 60, 600))
    writer.flush()
    return state


def sluice(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args], capture_output=True, check=False, cwd=ROOT
    )


def explain(proc: subprocess.CompletedProcess[bytes]) -> dict[str, dict[str, object]]:
    lines = [orjson.loads(line) for line in proc.stderr.splitlines() if line.startswith(b"{")]
    return {line["explain"]["table"]: line["explain"] for line in lines if "explain" in line}


def test_a_one_hour_query_reads_one_day_partition_of_three(state_dir: Path) -> None:
    sql = (
        "SELECT count(*) AS n, min(event_time) AS first FROM iot_readings "
        f"WHERE event_time >= {TS} AND event_time < {TS2}"
    )
    proc = sluice("query", sql, "--format", "json", "--explain", "--state-dir", str(state_dir))
    assert proc.returncode == 0, proc.stderr
    [row] = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert row["n"] == 3 and row["first"] == "2026-11-26T12:00:00+00:00"
    plan = explain(proc)["iot_readings"]
    assert (plan["files_planned"], plan["files_total"], plan["rows_read"]) == (1, 3, 3)
    assert plan["filter"] == (
        "event_time >= 2026-11-26T12:00:00+00:00 AND event_time < 2026-11-26T13:00:00+00:00"
    )
    # without a usable lower bound every file is read, and the answer is the same
    unpruned = sluice(
        "query",
        f"SELECT count(*) AS n FROM iot_readings WHERE event_time + INTERVAL 0 SECOND >= {TS} "
        f"AND event_time < {TS2}",
        "--explain",
        "--format",
        "json",
        "--state-dir",
        str(state_dir),
    )
    assert unpruned.returncode == 0, unpruned.stderr
    assert [orjson.loads(line)["n"] for line in unpruned.stdout.splitlines()] == [3]
    assert explain(unpruned)["iot_readings"]["files_planned"] == 3  # upper bound only: all days


def test_window_table_is_pruned_too(state_dir: Path) -> None:
    sql = f"SELECT sum(count) AS n FROM iot_metrics_1m WHERE window_start < {TS} - INTERVAL 1 DAY"
    proc = sluice("query", sql, "--format", "csv", "--explain", "--state-dir", str(state_dir))
    assert proc.returncode == 0, proc.stderr
    # the literal is followed by arithmetic: not a bare literal, so no push-down (correctness first)
    assert list(csv.reader(io.StringIO(proc.stdout.decode()))) == [["n"], ["3"]]
    assert explain(proc)["iot_metrics_1m"]["files_planned"] == 3
    one_day = f"SELECT sum(count) AS n FROM iot_metrics_1m WHERE window_start >= {TS}"
    proc = sluice("query", one_day, "--explain", "--format", "csv", "--state-dir", str(state_dir))
    assert list(csv.reader(io.StringIO(proc.stdout.decode()))) == [["n"], ["3"]]
    assert explain(proc)["iot_metrics_1m"]["files_planned"] == 1


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_output_formats(state_dir: Path, fmt: str) -> None:
    sql = (
        "SELECT device_id, count(*) AS readings, NULL AS nothing FROM iot_readings "
        "GROUP BY device_id"
    )
    proc = sluice("query", sql, "--format", fmt, "--state-dir", str(state_dir))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    if fmt == "json":
        assert [orjson.loads(line) for line in text.splitlines()] == [
            {"device_id": "d1", "readings": 9, "nothing": None}
        ]
    elif fmt == "csv":
        assert list(csv.reader(io.StringIO(text))) == [
            ["device_id", "readings", "nothing"],
            ["d1", "9", ""],
        ]
    else:
        lines = text.splitlines()
        assert lines[0].split() == ["device_id", "readings", "nothing"]
        assert set(lines[1]) <= {"-", " "} and lines[2].split() == ["d1", "9"]
        assert lines[-1] == "(1 rows)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM no_such_table", "unknown table 'no_such_table'; the tables are: iot_"),
        ("SELECT nope FROM iot_readings", "query failed:"),
    ],
)
def test_bad_queries_exit_2_with_a_clear_message(state_dir: Path, sql: str, message: str) -> None:
    proc = sluice("query", sql, "--state-dir", str(state_dir))
    assert proc.returncode == 2
    assert message in proc.stderr.decode() and proc.stdout == b""


def test_a_bound_beyond_python_datetimes_reads_the_whole_table(state_dir: Path) -> None:
    sql = "SELECT count(*) AS n FROM iot_readings WHERE event_time < '10000-01-01'"
    proc = sluice("query", sql, "--format", "csv", "--explain", "--state-dir", str(state_dir))
    assert proc.returncode == 0, proc.stderr
    assert list(csv.reader(io.StringIO(proc.stdout.decode()))) == [["n"], ["9"]]
    assert explain(proc)["iot_readings"]["files_planned"] == 3


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_table_with_a_damaged_data_file_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    state = tmp_path / "state"
    settings = WarehouseSettings(state_dir=state)
    writer = ExactlyOnceWriter(ensure_tables(open_catalog(settings), settings), 60)
    writer.add(window_batch(decode_batch("s", _readings_over_days(2, 1)), 60, 600))
    writer.flush()
    data_file = sorted((state / "warehouse").rglob("iot_readings/data/**/*.parquet"))[0]
    if damage == "deleted":
        data_file.unlink()
    else:
        data_file.write_bytes(data_file.read_bytes()[:100])
    proc = sluice("query", "SELECT count(*) FROM iot_readings", "--state-dir", str(state))
    stderr = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b"", stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("sluice: query failed: cannot read table iot_readings: "), stderr
    assert (data_file.name in stderr) if damage == "deleted" else ("Parquet" in stderr)


def test_tables_lists_metadata(state_dir: Path) -> None:
    proc = sluice("tables", "--format", "json", "--state-dir", str(state_dir))
    assert proc.returncode == 0, proc.stderr
    rows = {r["table"]: r for r in map(orjson.loads, proc.stdout.splitlines())}
    assert len(rows) == 6
    readings = rows["iot_readings"]
    assert (readings["rows"], readings["data_files"], readings["snapshots"]) == (9, 3, 1)
    assert rows["iot_metrics_1m"]["rows"] == 9 and rows["web_requests"]["rows"] == 0
    assert datetime.fromisoformat(readings["last_commit"]).tzinfo is not None
    text = sluice("tables", "--state-dir", str(state_dir)).stdout.decode()
    assert text.splitlines()[0].split() == [
        "table",
        "rows",
        "snapshots",
        "data_files",
        "last_commit",
    ]


def test_tables_on_an_empty_catalog_lists_nothing(tmp_path: Path) -> None:
    proc = sluice("tables", "--format", "csv", "--state-dir", str(tmp_path / "none"))
    assert proc.returncode == 0 and proc.stdout.decode().splitlines() == [
        "table,rows,snapshots,data_files,last_commit"
    ]


def test_athena_ddl_file_is_generated_from_the_schemas() -> None:
    assert (ROOT / "infra" / "athena" / "tables.sql").read_text() == all_ddl()
    assert all_ddl().count("'table_type' = 'ICEBERG'") == 6
