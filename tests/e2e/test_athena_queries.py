"""Every named Athena query in ``infra/athena/queries`` runs locally through ``sluice query``.

The tables get real rows through the stream stages and the exactly-once writer (readings of two
devices with one outlier, access-log lines from several countries with errors, dead letters), all
within the last hour, as the queries look at the last 24 hours.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sluice.core.contracts import GeoInfo, IotReading, Source, WebAccessLog
from sluice.stream.envelopes import encode, wrap_access_log, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, filter_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)
from sluice.transform.filters import RecordFilter

ROOT = Path(__file__).resolve().parents[2]
ATHENA = ROOT / "infra" / "athena"
QUERIES = sorted((ATHENA / "queries").glob("*.sql"))


def _records(start: datetime) -> list[InputRecord]:
    """30 minutes of readings (one 1000.0 outlier), access-log lines and two malformed records."""
    records: list[InputRecord] = []

    def add(when: datetime, data: bytes) -> None:
        arrival = when + timedelta(seconds=3)
        records.append(InputRecord(len(records), 0, arrival.timestamp(), data))

    countries = ["US", "DE", None]
    for minute in range(30):
        for second in (0, 20, 40):
            when = start + timedelta(minutes=minute, seconds=second)
            for device in ("d1", "d2"):
                value = 1000.0 if (device, minute, second) == ("d2", 17, 20) else 20.0 + second / 20
                reading = IotReading(device_id=device, event_time=when, metrics={"temp": value})
                add(when, encode(wrap_reading(reading, when)))
            status = 500 if second == 40 and minute % 3 == 0 else 404 if second == 20 else 200
            country = countries[minute % 3]
            log = WebAccessLog(
                client_ip=f"10.0.0.{minute}",
                event_time=when,
                status=status,
                method="GET",
                path=f"/page/{minute % 4}",
                bytes_sent=100 + minute,
                geo=GeoInfo(status="found", country_iso=country) if country else None,
            )
            add(when, encode(wrap_access_log(log, "access.log", len(records), when)))
    add(start + timedelta(minutes=5), b"{not json")
    add(start + timedelta(minutes=6), b"\xff\xfe")
    return records


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("athena") / "state"
    settings = WarehouseSettings(state_dir=state)
    catalog = open_catalog(settings)
    writer = ExactlyOnceWriter(ensure_tables(catalog, settings), 60)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=45)
    batch = decode_batch("shard-0", _records(start))
    batch = filter_batch(batch, {Source.WEBLOG: RecordFilter((), "weblog")})
    writer.add(window_batch(batch, 60, 600))
    report = writer.flush()
    assert report.rows["iot_readings"] == 180 and report.rows["dead_letters"] == 2
    return state


def run_query(sql: str, state_dir: Path) -> list[dict[str, object]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice",
            "query",
            sql,
            "--format",
            "json",
            "--explain",
            "--state-dir",
            str(state_dir),
        ],
        capture_output=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    plans = [
        orjson.loads(line)["explain"] for line in proc.stderr.splitlines() if b"explain" in line
    ]
    # each query's "last 24 hours" reaches the scan: the time filter is pushed down to pyiceberg
    assert plans and all(plan["filter"] for plan in plans), plans
    return [orjson.loads(line) for line in proc.stdout.splitlines()]


def test_the_four_named_queries_exist() -> None:
    assert {q.stem for q in QUERIES} >= {
        "traffic_by_country_hour",
        "error_rate_by_path",
        "device_anomalies",
        "dead_letters_by_reason",
    }


@pytest.mark.parametrize("query", QUERIES, ids=lambda p: p.stem)
def test_every_named_query_runs_locally_with_rows(query: Path, state_dir: Path) -> None:
    rows = run_query(query.read_text(), state_dir)
    assert rows, f"{query.name} returned no rows"
    first = rows[0]
    if query.stem == "traffic_by_country_hour":
        assert {r["country"] for r in rows} == {"US", "DE", "(unknown)"}
        assert sum(int(str(r["requests"])) for r in rows) == 90
    elif query.stem == "error_rate_by_path":
        assert 0 < float(str(first["error_rate"])) <= 1 and len(rows) == 4
    elif query.stem == "device_anomalies":
        assert [(r["device_id"], r["metric"], r["max_value"]) for r in rows] == [
            ("d2", "temp", 1000.0)
        ]
    elif query.stem == "dead_letters_by_reason":
        assert sum(int(str(r["rejected"])) for r in rows) == 2
        assert {r["source"] for r in rows} and all(r["error_type"] for r in rows)


def test_workgroup_settings_are_complete() -> None:
    workgroup = json.loads((ATHENA / "workgroup.json").read_text())
    config = workgroup["Configuration"]
    assert config["EngineVersion"]["SelectedEngineVersion"] == "Athena engine version 3"
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["ResultConfiguration"]["OutputLocation"].startswith("s3://")
    assert config["BytesScannedCutoffPerQuery"] >= 10_000_000  # Athena's minimum is 10 MB
