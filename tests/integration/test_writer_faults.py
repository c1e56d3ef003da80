"""The writer under hostile input and faults, against real Iceberg tables (SQLite catalog).

- one record never wedges a flush: a window that cannot be stored or a value a column cannot hold
  becomes a dead letter; the rest lands, and a restarted writer does it again, the same way;
- metadata stays small: old ``metadata.json`` files are deleted, a flush that gives a table nothing
  writes no snapshot, a window rewrite is one snapshot; idle tables still record their positions;
- duplicates by event id land once and are counted once, across flushes, within one, and across a
  crash between a window table's commit and its event table's;
- a copied state folder refuses to touch the original's files; two processes creating the tables
  of a new state folder at once both succeed.
"""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.table import Table

from beam_jobs.preflight import check_catalog
from beam_jobs.settings import JobSettings
from sluice.core.contracts import ErrorType, IotReading, Source, Stage, WebAccessLog
from sluice.core.deadletters import dead_letter
from sluice.core.errors import ConfigError
from sluice.stream.envelopes import encode, wrap_access_log, wrap_dead_letter, wrap_reading
from sluice.stream.stages import (
    Event,
    InputRecord,
    JobBatch,
    decode_batch,
    filter_batch,
    window_batch,
)
from sluice.tables.specs import TABLES
from sluice.tables.warehouse import (
    METADATA_VERSIONS_KEPT,
    TABLE_PROPERTIES,
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ARRIVAL = T0 + timedelta(seconds=59)
END_OF_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def reading(i: int, device: str = "d1", at: datetime = T0, **metrics: float) -> IotReading:
    return IotReading(
        device_id=device,
        event_time=at + timedelta(seconds=i % 60),
        metrics=metrics or {"t": float(i)},
        message_id=f"{device}-{i}",
    )


def records(items: list[Any], first: int, arrival: datetime = ARRIVAL) -> list[InputRecord]:
    """One user record per item: an ``IotReading``, a ``WebAccessLog`` or ready envelope bytes."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, IotReading):
            data = encode(wrap_reading(item, ingest_time=arrival))
        elif isinstance(item, WebAccessLog):
            data = encode(wrap_access_log(item, "f", first + i, arrival))
        else:
            data = item
        out.append(InputRecord(first + i, 0, arrival.timestamp(), data))
    return out


def batch(items: list[Any], first: int, previous: int | None = None, shard: str = "s") -> JobBatch:
    decoded = decode_batch(shard, records(items, first), previous_sequence=previous)
    return window_batch(decoded, 60, 600)


def unchecked(event_time: datetime, sequence: int, **fields: Any) -> Event:
    """An IoT event whose record skipped its contract (old data, another producer, a re-drive)."""
    record = IotReading.model_construct(
        device_id="bad", event_time=event_time, metrics={"t": 1.0}, attributes={},
        location=None, message_id=None, flags=[], **fields,
    )  # fmt: skip
    return Event(sequence, 0, ARRIVAL.timestamp(), f"bad-{sequence}", ARRIVAL, record)


@pytest.fixture
def settings(tmp_path: Path) -> WarehouseSettings:
    return WarehouseSettings(state_dir=tmp_path / "state")


@pytest.fixture
def tables(settings: WarehouseSettings) -> dict[str, Table]:
    return ensure_tables(open_catalog(settings), settings)


def rows(tables: dict[str, Table], name: str) -> list[dict[str, Any]]:
    return tables[name].refresh().scan().to_arrow().to_pylist()


def window_counts(tables: dict[str, Table]) -> dict[tuple[str, datetime], int]:
    return {(r["device_id"], r["window_start"]): r["count"] for r in rows(tables, "iot_metrics_1m")}


def snapshots(table: Table) -> int:
    return len(table.refresh().metadata.snapshots)


# --- one record never wedges the job ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the unchecked "hot" metric
def test_an_event_whose_window_cannot_be_stored_becomes_a_dead_letter_at_the_window_stage():
    # GIVEN good readings and, bypassing the contract, one at 9999-12-31T23:59:59Z (its window
    # would end in year 10000) and one whose metrics the aggregation cannot take
    decoded = decode_batch("s", records([reading(1), reading(2)], 1))
    nonsense = IotReading.model_construct(device_id="bad", event_time=T0, metrics={"t": "hot"})
    decoded = replace(decoded, events={**decoded.events, Source.IOT: (
        *decoded.events[Source.IOT],
        unchecked(END_OF_TIME, 3),
        Event(4, 0, ARRIVAL.timestamp(), "bad-4", ARRIVAL, nonsense),
    )})  # fmt: skip
    # WHEN windowed
    out = window_batch(decoded, 60, 600)
    # THEN both become dead letters with reasons, the good ones are aggregated
    letters = {d.record.error_type: d.record for d in out.dead_letters}
    assert set(letters) == {ErrorType.INVALID_TIMESTAMP, ErrorType.SCHEMA_VIOLATION}
    assert all(d.record.stage == Stage.WINDOW for d in out.dead_letters)
    assert "9999-12-31" in letters[ErrorType.INVALID_TIMESTAMP].message
    assert [e.sequence for e in out.events[Source.IOT]] == [1, 2]
    assert sum(s.count for s in out.iot_windows.values()) == 2
    # AND the same batch again gives the same dead letters (deterministic ids)
    again = window_batch(decode_batch("s", records([reading(1), reading(2)], 1)), 60, 600)
    assert len(again.dead_letters) == 0


def test_a_record_the_filter_rules_cannot_judge_becomes_a_dead_letter():
    class Picky:
        def judge(self, record: Any) -> tuple[str | None, list[str]]:
            if record.device_id == "d2":
                raise TypeError("cannot compare")
            return None, []

    decoded = decode_batch("s", records([reading(1), reading(2, device="d2"), reading(3)], 1))
    out = filter_batch(decoded, {Source.IOT: Picky()})  # type: ignore[dict-item]
    assert [e.sequence for e in out.events[Source.IOT]] == [1, 3]
    [letter] = [d.record for d in out.dead_letters]
    assert (letter.stage, letter.error_type) == (Stage.FILTER, ErrorType.SCHEMA_VIOLATION)
    assert "TypeError: cannot compare" in letter.message


def test_a_value_no_column_can_hold_becomes_a_dead_letter_and_the_rest_lands(tables, settings):
    # GIVEN a batch of good web requests and one whose bytes_sent does not fit a long column
    good = [WebAccessLog(client_ip="10.0.0.1", event_time=T0, status=200, path="/a", bytes_sent=5)]
    huge = WebAccessLog.model_construct(
        **{**good[0].model_dump(), "bytes_sent": 2**64, "path": "/huge"}
    )
    first = decode_batch("s", records(good * 3, 1))
    huge_event = Event(9, 0, ARRIVAL.timestamp(), "huge-9", ARRIVAL, huge)
    first = replace(first, last_sequence=9,
                    events={**first.events, Source.WEBLOG: (*first.events[Source.WEBLOG], huge_event)})  # fmt: skip
    first = window_batch(first, 60, 600)  # its partials include the huge one
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(first)
    # WHEN flushed
    report = writer.flush()
    # THEN the good rows land, the bad one is a write-stage dead letter, the window counts 3
    assert report.rows["web_requests"] == 3 and report.dead_lettered == 1
    [letter] = rows(tables, "dead_letters")
    assert (letter["stage"], letter["error_type"]) == ("write", "schema_violation")
    assert "web_requests" in letter["message"] and letter["source"] == "weblog"
    traffic = rows(tables, "web_traffic_1m")
    assert [(t["path"], t["requests"], t["bytes"]) for t in traffic] == [("/a", 3, 15)]
    # AND a writer restarted on the tables flushes the same batch as a no-op (nothing twice)
    again = ExactlyOnceWriter(ensure_tables(open_catalog(settings), settings), 60)
    again.add(first)
    assert again.flush().rows == {}
    assert len(rows(tables, "dead_letters")) == 1 and len(rows(tables, "web_requests")) == 3


def test_a_dead_letter_lost_in_a_crash_is_made_again_when_its_table_catches_up(tables, settings):
    # GIVEN a flush whose event table committed but whose dead_letters commit died; one of its
    # readings has a device id no string column can hold (a lone surrogate)
    first = batch([reading(1)], 1)
    lone = Event(
        2,
        0,
        ARRIVAL.timestamp(),
        "x-2",
        ARRIVAL,
        IotReading.model_construct(
            device_id="d1\ud800",
            event_time=T0,
            metrics={},
            attributes={},
            location=None,
            message_id=None,
            flags=[],
        ),
    )
    first = replace(first, last_sequence=2,
                    events={**first.events, Source.IOT: (*first.events[Source.IOT], lone)})  # fmt: skip
    writer = ExactlyOnceWriter(tables, 60)
    original = writer._commit_rows

    def die_at_dead_letters(name: str, *args: Any) -> None:
        if name == "dead_letters":
            raise RuntimeError("killed")
        original(name, *args)

    writer._commit_rows = die_at_dead_letters  # type: ignore[method-assign]
    writer.add(first)
    with pytest.raises(RuntimeError):
        writer.flush()
    assert len(rows(tables, "iot_readings")) == 1 and rows(tables, "dead_letters") == []
    # WHEN a restarted writer replays the batch
    again = ExactlyOnceWriter(ensure_tables(open_catalog(settings), settings), 60)
    assert again.resume_positions() == {}  # dead_letters holds no position yet
    again.add(first)
    again.flush()
    # THEN the dead letter is written once, the reading is not written twice
    [letter] = rows(tables, "dead_letters")
    assert letter["stage"] == "write" and letter["error_type"] == "schema_violation"
    assert len(rows(tables, "iot_readings")) == 1


# --- metadata growth --------------------------------------------------------------------------------


def test_tables_prune_old_metadata_and_write_no_empty_snapshots(tables, settings):
    assert all(t.properties[k] == v for t in tables.values() for k, v in TABLE_PROPERTIES.items())
    writer = ExactlyOnceWriter(tables, 60)
    previous = None
    for n in range(METADATA_VERSIONS_KEPT + 6):
        first = 10 * n + 1
        # each flush: a new reading and a late one for the first window, which is rewritten
        writer.add(
            batch(
                [reading(first, at=T0 + timedelta(minutes=n)), reading(1000 + n)], first, previous
            )
        )
        previous = first + 1
        writer.flush()
    flushes = METADATA_VERSIONS_KEPT + 6
    # THEN the event and window tables have one snapshot per flush (a window rewrite is one)
    assert snapshots(tables["iot_readings"]) == snapshots(tables["iot_metrics_1m"]) == flushes
    # AND the idle tables only their first positions commit
    assert snapshots(tables["web_requests"]) == snapshots(tables["dead_letters"]) == 1
    # AND no table keeps more than the documented number of old metadata.json files
    for name, table in tables.items():
        folder = Path(table.location().removeprefix("file://")) / "metadata"
        assert len(list(folder.glob("*.metadata.json"))) <= METADATA_VERSIONS_KEPT + 1, name
    windows = window_counts(tables)
    assert windows[("d1", T0)] == flushes + 1  # reading(1) and one late reading per flush


def test_existing_tables_get_the_metadata_properties(tables, settings):
    table = tables["feed_items"]
    with table.transaction() as tx:
        tx.remove_properties(*TABLE_PROPERTIES)
    assert not set(TABLE_PROPERTIES) & set(table.refresh().properties)
    again = ensure_tables(open_catalog(settings), settings)
    assert {k: again["feed_items"].properties.get(k) for k in TABLE_PROPERTIES} == TABLE_PROPERTIES


def test_idle_tables_record_positions_when_due_when_a_shard_is_new_and_at_a_clean_stop(tables):
    now = [1_000_000.0]
    writer = ExactlyOnceWriter(tables, 60, positions_commit_seconds=300, clock=lambda: now[0])
    writer.add(batch([reading(1)], 1))
    writer.flush()  # the first flush: every table records the new shard
    assert all(p == {"s": 1} for p in writer.positions.values())
    writer.add(batch([reading(2)], 2, previous=1))
    now[0] += 60
    report = writer.flush()
    assert set(report.rows) == {"iot_metrics_1m", "iot_readings"}
    assert writer.resume_positions() == {"s": 1}  # the idle ones hold resume back a little
    # a shard new to a table is recorded at once, however recent its last commit
    writer.add(batch([reading(3)], 50, shard="t"))
    now[0] += 1
    assert set(writer.flush().rows) == set(tables)
    # positions older than positions_commit_seconds are recorded with a snapshot of no rows
    writer.add(batch([reading(4)], 3, previous=2))
    now[0] += 300
    report = writer.flush()
    assert report.rows == {name: 1 if name.startswith("iot") else 0 for name in tables}
    assert writer.resume_positions() == {"s": 3, "t": 50}
    # and a clean stop records everything
    writer.add(batch([reading(5)], 4, previous=3))
    writer.flush()
    assert writer.catch_up() == ["web_traffic_1m", "web_requests", "feed_items", "dead_letters"]
    assert {n: table_positions(t.refresh()) for n, t in tables.items()} == {
        n: {"s": 4, "t": 50} for n in tables
    }


# --- duplicates -------------------------------------------------------------------------------------


def test_duplicates_land_once_across_flushes_and_within_one(tables):
    writer = ExactlyOnceWriter(tables, 60)
    originals = [reading(i, device=f"d{i % 2}") for i in range(6)]
    writer.add(batch(originals[:4], 1))
    writer.flush()
    # GIVEN copies minutes later (an edge retry), some twice in one batch, next to new readings
    again = [originals[1], originals[4], originals[4], originals[2], originals[5], originals[5]]
    writer.add(batch(again, 5, previous=4))
    report = writer.flush()
    # THEN each event id is one row and each reading is counted once
    assert report.duplicates == 4
    ids = [r["event_id"] for r in rows(tables, "iot_readings")]
    assert len(ids) == len(set(ids)) == 6
    assert sum(window_counts(tables).values()) == 6
    # AND the same id with another event time is another reading (not a copy)
    moved = originals[0].model_copy(update={"event_time": T0 + timedelta(minutes=5)})
    writer.add(batch([moved], 11, previous=10))
    assert writer.flush().duplicates == 0


def test_dead_letters_of_the_same_id_land_once_across_flushes_and_within_one(tables):
    # GIVEN an edge dead letter, and the same letter again from a client's retry of the body
    letter = dead_letter(
        Source.IOT, Stage.EDGE_IOT, ErrorType.INVALID_JSON, "bad", b"{x", first_seen=ARRIVAL,
        identity=("body-digest", "line 1", 0),
    )  # fmt: skip
    other = dead_letter(
        Source.IOT, Stage.EDGE_IOT, ErrorType.INVALID_JSON, "bad", b"{y", first_seen=ARRIVAL,
        identity=("body-digest", "line 2", 0),
    )  # fmt: skip
    data, copy = encode(wrap_dead_letter(letter, ARRIVAL)), encode(wrap_dead_letter(other, ARRIVAL))
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(batch([data], 1))
    writer.flush()
    # WHEN the copy arrives a minute later, twice in one batch, next to a new letter
    later = decode_batch("s", records([data, copy, data, copy], 2, ARRIVAL + timedelta(minutes=1)),
                         previous_sequence=1)  # fmt: skip
    writer.add(window_batch(later, 60, 600))
    report = writer.flush()
    # THEN each letter id is one row
    ids = [r["dead_letter_id"] for r in rows(tables, "dead_letters")]
    assert sorted(ids) == sorted({letter.dead_letter_id, other.dead_letter_id})
    assert report.duplicates == 3


def test_duplicates_stay_exactly_once_across_a_crash_between_window_and_event_commits(
    tables, settings
):
    # GIVEN a first flush of originals, then a flush of copies and new readings that dies after
    # the window table committed and before the event table did
    originals = [reading(i) for i in range(4)]
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(batch(originals, 1))
    writer.flush()
    fresh = [reading(10), reading(11)]
    second = batch([originals[0], fresh[0], fresh[0], originals[3], fresh[1]], 5, previous=4)
    original = writer._commit_rows

    def die_at_the_event_table(name: str, *args: Any) -> None:
        if name == "iot_readings":
            raise RuntimeError("killed")
        original(name, *args)

    writer._commit_rows = die_at_the_event_table  # type: ignore[method-assign]
    writer.add(second)
    with pytest.raises(RuntimeError):
        writer.flush()
    assert table_positions(tables["iot_metrics_1m"].refresh()) == {"s": 9}
    assert table_positions(tables["iot_readings"].refresh()) == {"s": 4}
    assert writer.catch_up() == []  # a stop after a failed flush records nothing it did not write
    # WHEN a restarted writer replays from the smallest position, in other batch boundaries, with
    # one more copy of a reading the crashed flush had counted
    resumed = ExactlyOnceWriter(ensure_tables(open_catalog(settings), settings), 60)
    assert resumed.resume_positions() == {"s": 4}
    resumed.add(batch([originals[0], fresh[0], fresh[0]], 5, previous=4))
    resumed.add(batch([originals[3], fresh[1], fresh[1], reading(12)], 8, previous=7))
    resumed.flush()
    # THEN every event id is one row, and the windows count each reading once
    ids = [r["event_id"] for r in rows(tables, "iot_readings")]
    assert len(ids) == len(set(ids)) == 7
    assert sum(window_counts(tables).values()) == 7


# --- state folders ----------------------------------------------------------------------------------


def test_a_copied_state_folder_never_touches_the_original(tables, settings, tmp_path):
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(batch([reading(1)], 1))
    writer.flush()
    original_files = sorted(p for p in settings.state_dir.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in original_files}
    copy = tmp_path / "copy"
    shutil.copytree(settings.state_dir, copy)
    # WHEN the copy is opened, written or maintained
    copied = WarehouseSettings(state_dir=copy)
    with pytest.raises(ConfigError, match="outside this state folder's warehouse"):
        ensure_tables(open_catalog(copied), copied)
    with pytest.raises(ConfigError, match="copied or moved"):  # the job's start-up check
        check_catalog(JobSettings(state_dir=copy))
    maintain = subprocess.run(
        [sys.executable, "-m", "sluice", "maintain", "--state-dir", str(copy),
         "--expire-older-than", "0s", "--keep-last", "1", "--remove-orphans",
         "--orphan-min-age", "0s"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    # THEN it stops with one line (exit 2), and the original's files are all there, unchanged
    assert maintain.returncode == 2, maintain.stderr
    assert len(maintain.stderr.decode().strip().splitlines()) == 1
    assert b"copied or moved" in maintain.stderr
    assert {p: p.stat().st_mtime_ns for p in original_files} == before
    assert sorted(p for p in settings.state_dir.rglob("*") if p.is_file()) == original_files


def _create(state: str, start: Any) -> list[str]:
    start.wait()
    settings = WarehouseSettings(state_dir=Path(state))
    return sorted(ensure_tables(open_catalog(settings), settings))


def test_two_processes_creating_the_tables_of_a_new_state_folder_both_succeed(tmp_path):
    # Both start at one signal on a new folder: they race to create the catalog's own SQL tables,
    # the namespace and every Iceberg table (each race seen failing before the fix)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        for attempt in range(6):
            start = manager.Event()
            state = str(tmp_path / f"state-{attempt}")
            results = [pool.apply_async(_create, (state, start)) for _ in range(2)]
            start.set()
            made = [r.get(timeout=120) for r in results]
            assert made[0] == made[1] == sorted(TABLES)
