"""``sluice dead-letters``: list dead letters from a real (SQLite) warehouse, re-drive them to a moto
stream, and check they land once: published once, removed from the table, a second run sends nothing.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from sluice.cli.main import main
from sluice.core.contracts import ErrorType, IotReading, Source, WebAccessLog
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import encode, wrap_dead_letter, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch
from sluice.tables.redrive import REDRIVE_PROPERTY, read_letters, redrive_event_id
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)

_FUNCTIONAL = str(Path(__file__).resolve().parents[1] / "functional")
if _FUNCTIONAL not in sys.path:
    sys.path.append(_FUNCTIONAL)
from kinesis_reader import read_stream  # noqa: E402

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NEW_FORMAT = '$remote_addr [$time_local] "$request" $status $body_bytes_sent rt=$request_time'


def new_format_line(i: int) -> str:
    return f'198.51.100.{i} [26/Nov/2026:12:00:{i:02d} +0000] "GET /p/{i} HTTP/1.1" 200 {i} rt=0.5'


@pytest.fixture
def warehouse(tmp_path: Path) -> tuple[Path, Any]:
    """Dead letters as the job writes them: edge rejections travelling the stream, a too_late one."""
    state = tmp_path / "state"
    settings = WarehouseSettings(state_dir=state)
    catalog = open_catalog(settings)
    tables = ensure_tables(catalog, settings)
    # The edge ran with 'combined' while the servers had switched to NEW_FORMAT.
    edge = LogParser("combined").parse_batch([new_format_line(i).encode() for i in range(1, 4)])
    assert not edge.valid and len(edge.dead_letters) == 3
    garbage = LogParser("combined").parse_batch([b"not a log line at all"]).dead_letters
    arrival = T0 + timedelta(seconds=5)
    envelopes = [wrap_dead_letter(d, arrival) for d in [*edge.dead_letters, *garbage]]
    late = T0 + timedelta(hours=2)
    records = [
        InputRecord(10 + i, 0, arrival.timestamp(), encode(e)) for i, e in enumerate(envelopes)
    ]
    reading = IotReading(device_id="d1", event_time=T0, metrics={"t": 1.0})
    records.append(InputRecord(20, 0, late.timestamp(), encode(wrap_reading(reading, late))))
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(window_batch(decode_batch("shardId-0", records), 60, 600))
    writer.flush()
    return state, tables["dead_letters"]


@pytest.fixture
def stream(aws_env: str) -> tuple[Any, str]:
    client = boto3.client("kinesis", endpoint_url=aws_env)
    name = f"redrive-{uuid.uuid4().hex[:12]}"
    client.create_stream(StreamName=name, ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName=name)
    return client, name


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_list_then_redrive_lands_once(
    warehouse: tuple[Path, Any], stream: tuple[Any, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, table = warehouse
    client, name = stream
    positions_before = table_positions(table.refresh())

    # Listing: filtered by reason, as JSON lines and as a table.
    code, out = run_cli(
        capsys, "dead-letters", "--reason", "unparseable_line", "--format", "json",
        "--state-dir", str(state),
    )  # fmt: skip
    assert code == 0
    listed = [orjson.loads(line) for line in out.splitlines()]
    assert len(listed) == 4
    assert {row["error_type"] for row in listed} == {"unparseable_line"}
    assert {row["source"] for row in listed} == {"weblog"}
    assert any("198.51.100.1 [26/Nov" in row["raw"] for row in listed)
    code, out = run_cli(capsys, "dead-letters", "--state-dir", str(state))
    assert code == 0 and "too_late" in out and "(5 rows)" in out

    # A dry run changes nothing.
    code, out = run_cli(
        capsys, "dead-letters", "--reason", "unparseable_line", "--state-dir", str(state),
        "--redrive", "--dry-run", "--log-format", NEW_FORMAT,
    )  # fmt: skip
    assert code == 0 and orjson.loads(out)["redriven"] == 3
    assert read_stream(client, name).envelopes == []

    # Re-drive with the new format: the three fixed lines are published, then removed.
    letters = {d.dead_letter_id: d for d in read_letters(table.refresh())}
    code, out = run_cli(
        capsys, "dead-letters", "--state-dir", str(state), "--redrive",
        "--log-format", NEW_FORMAT, "--stream-name", name,
    )  # fmt: skip
    assert code == 0
    summary = orjson.loads(out)
    assert summary["redriven"] == summary["envelopes_published"] == summary["removed"] == 3
    assert summary["still_failing"] == {"unparseable_line": 1}
    assert summary["skipped"] == {"too_late": 1}

    contents = read_stream(client, name)
    fixed = [d for d in letters.values() if "198.51.100." in d.raw]
    assert contents.event_ids == {redrive_event_id(d): 1 for d in fixed}
    paths = sorted(WebAccessLog.model_validate(e.payload).path or "" for e in contents.envelopes)
    assert paths == ["/p/1", "/p/2", "/p/3"]
    assert {e.source for e in contents.envelopes} == {Source.WEBLOG}

    table = table.refresh()
    remaining = read_letters(table)
    assert sorted(d.error_type for d in remaining) == [
        ErrorType.TOO_LATE,
        ErrorType.UNPARSEABLE_LINE,
    ]
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert REDRIVE_PROPERTY in snapshot.summary.additional_properties
    assert table_positions(table) == positions_before  # the job's resume point is untouched

    # Running it again publishes nothing more and removes nothing.
    code, out = run_cli(
        capsys, "dead-letters", "--state-dir", str(state), "--redrive",
        "--log-format", NEW_FORMAT, "--stream-name", name,
    )  # fmt: skip
    assert code == 0
    again = orjson.loads(out)
    assert again["redriven"] == again["envelopes_published"] == again["removed"] == 0
    assert read_stream(client, name).event_ids == contents.event_ids


def test_redrive_without_a_stream_is_a_usage_error(
    warehouse: tuple[Path, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, _ = warehouse
    monkeypatch.delenv("SLUICE_STREAM_NAME", raising=False)
    assert main(["dead-letters", "--state-dir", str(state), "--redrive"]) == 2
    assert "--stream-name" in capsys.readouterr().err
    assert main(["dead-letters", "--state-dir", str(state), "--reason", "nope"]) == 2


def test_an_interrupted_redrive_keeps_its_letters_and_resends_the_same_envelopes(
    warehouse: tuple[Path, Any],
) -> None:
    from sluice.tables.redrive import RedriveError, redrive

    _, table = warehouse
    letters = read_letters(table, reason="unparseable_line")
    attempts: list[list[bytes]] = []

    def half_published(envelopes: list[Any]) -> int:
        attempts.append([encode(e) for e in envelopes])
        return len(envelopes) - 1  # the stream took all but one

    with pytest.raises(RedriveError):
        redrive(table, letters, half_published, log_format=NEW_FORMAT)
    assert len(read_letters(table.refresh(), reason="unparseable_line")) == 4

    def published(envelopes: list[Any]) -> int:
        attempts.append([encode(e) for e in envelopes])
        return len(envelopes)

    report = redrive(table, letters, published, log_format=NEW_FORMAT)
    assert report.removed == 3
    assert attempts[0] == attempts[1]  # a retry sends byte-identical envelopes (same event ids)
    assert len(read_letters(table.refresh(), reason="unparseable_line")) == 1


def test_redriven_lines_land_once_in_the_tables_even_after_a_crash_before_the_delete(
    warehouse: tuple[Path, Any],
    stream: tuple[Any, str],
    geoip_dbs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    run_job: Callable[[list[str]], dict[str, int]],
) -> None:
    from sluice.tables import redrive as redrive_module

    state, table = warehouse
    client, name = stream
    fixed = [d for d in read_letters(table) if "198.51.100." in d.raw]
    argv = ("dead-letters", "--state-dir", str(state), "--redrive", "--log-format", NEW_FORMAT,
            "--stream-name", name)  # fmt: skip

    # GIVEN a re-drive that published, then died before removing its letters
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed between publish and delete")

    with monkeypatch.context() as patch:
        patch.setattr(redrive_module, "remove_letters", crash)
        assert main(list(argv)) == 2  # the CLI reports the crash in one line
    assert "unexpected RuntimeError: killed between publish and delete" in capsys.readouterr().err
    # AND a second re-drive that completed: the stream holds every fixed line twice
    code, out = run_cli(capsys, *argv)
    assert code == 0 and orjson.loads(out)["removed"] == 3
    assert read_stream(client, name).event_ids == {redrive_event_id(d): 2 for d in fixed}

    # WHEN the job reads the stream (the lines are hours old: their windows closed long ago)
    city_db, asn_db = geoip_dbs
    run_job([
        "--stream_name", name,
        "--stop_when_idle_seconds", "2",
        "--commit_interval_seconds", "1",
        "--state_dir", str(state),
        "--geoip_city_db", str(city_db),
        "--geoip_asn_db", str(asn_db),
    ])  # fmt: skip

    # THEN each fixed line is one row of web_requests and counts once in its (old) window
    settings = WarehouseSettings(state_dir=state)
    tables = ensure_tables(open_catalog(settings), settings)
    web = tables["web_requests"].scan().to_arrow().to_pylist()
    assert sorted(r["event_id"] for r in web) == sorted(redrive_event_id(d) for d in fixed)
    assert sorted(r["path"] for r in web) == ["/p/1", "/p/2", "/p/3"]
    traffic = tables["web_traffic_1m"].scan().to_arrow().to_pylist()
    assert sorted((r["path"], r["window_start"], r["requests"]) for r in traffic) == [
        (f"/p/{i}", T0, 1) for i in (1, 2, 3)
    ]
    # AND none of them became a too_late dead letter again
    letters = read_letters(tables["dead_letters"])
    assert sorted(d.error_type for d in letters) == [ErrorType.TOO_LATE, ErrorType.UNPARSEABLE_LINE]
