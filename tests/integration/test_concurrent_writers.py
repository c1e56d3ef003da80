"""Several exactly-once writers on the same tables (real SQLite catalog, file warehouse).

Writers of one job (each with its own catalog connection, as parallel workers have) commit
different shards at the same moment: nothing is lost or doubled, window rows merge both writers'
events, every shard's position survives. A writer that meets another writer's commit of its own
shard, or a newer job's claim, is fenced and writes nothing. The stream's identity recorded with
the claim refuses a recreated or different stream, unless told to start the new one afresh.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.compute as pc
import pytest

from sluice.core.contracts import IotReading
from sluice.core.errors import ConfigError
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord, JobBatch, decode_batch, window_batch
from sluice.tables.ownership import StreamIdentity, WriterFenced, claim_tables, table_owner
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STREAM = StreamIdentity("events", "arn:aws:kinesis:us-east-1:123456789012:stream/events", 1.0e9)


def _batch(shard: str, first: int, count: int, second: int, previous: int | None) -> JobBatch:
    """``count`` readings at ``second``, ``second`` + 2, ...; shards ending in 0 are device d0's,
    in 1 device d1's (so shards of two writers share windows)."""
    arrival = T0 + timedelta(seconds=30)
    records = [
        InputRecord(
            first + i,
            0,
            arrival.timestamp(),
            encode(
                wrap_reading(
                    IotReading(
                        device_id=f"d{shard[-1]}",
                        event_time=T0 + timedelta(seconds=(second + 2 * i) % 240),
                        metrics={"t": float(first + i)},
                    ),
                    ingest_time=arrival,
                )
            ),
        )
        for i in range(count)
    ]
    return window_batch(decode_batch(shard, records, previous_sequence=previous), 60, 600)


def _chain(shard: str, batches: int, size: int, parity: int) -> list[JobBatch]:
    out, previous = [], None
    for n in range(batches):
        first = 1_000 * (n + 1)
        out.append(_batch(shard, first, size, parity + 7 * n, previous))
        previous = first + size - 1
    return out


@pytest.fixture
def settings(tmp_path: Any) -> WarehouseSettings:
    return WarehouseSettings(state_dir=tmp_path / "state")


def _tables(settings: WarehouseSettings) -> dict[str, Any]:
    """The tables through a catalog connection of their own (one per writer, like workers)."""
    return ensure_tables(open_catalog(settings), settings)


def _readings(settings: WarehouseSettings) -> tuple[Counter[str], int]:
    tables = _tables(settings)
    rows = tables["iot_readings"].scan().to_arrow()
    windows = tables["iot_metrics_1m"].scan().to_arrow()
    return Counter(rows.column("event_id").to_pylist()), int(
        pc.sum(windows.column("count")).as_py()
    )


def test_writers_of_different_shards_commit_at_once_and_lose_and_double_nothing(
    settings: WarehouseSettings,
) -> None:
    # GIVEN one job's claim and two writers on their own connections, each with two shards,
    # whose readings fall into the same minute windows (so their window rewrites collide)
    owner = claim_tables(_tables(settings), STREAM).owner
    work = {
        "a": [*_chain("shard-a0", 6, 40, 0), *_chain("shard-a1", 6, 40, 0)],
        "b": [*_chain("shard-b0", 6, 40, 1), *_chain("shard-b1", 6, 40, 1)],
    }
    conflicts: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(name: str) -> None:
        try:
            writer = ExactlyOnceWriter(_tables(settings), 60, owner=owner)
            by_shard: dict[str, list[JobBatch]] = {}
            for batch in work[name]:
                by_shard.setdefault(batch.shard_id, []).append(batch)
            start.wait()
            for round_ in range(6):  # one batch of each of its shards per flush
                for batches in by_shard.values():
                    writer.add(batches[round_])
                conflicts.append(writer.flush().conflicts)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread
            errors.append(error)

    # WHEN both flush six times at the same moment
    threads = [threading.Thread(target=write, args=(name,)) for name in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    # THEN they did collide, and every reading landed exactly once, in rows and in windows
    assert sum(conflicts) > 0
    ids, counted = _readings(settings)
    assert len(ids) == 4 * 6 * 40 and set(ids.values()) == {1}
    assert counted == 4 * 6 * 40
    # AND every table holds every shard's last position
    last = {f"shard-{s}": 6_000 + 39 for s in ("a0", "a1", "b0", "b1")}
    tables = _tables(settings)
    assert table_positions(tables["iot_readings"]) == last
    assert table_positions(tables["iot_metrics_1m"]) == last


def test_a_writer_meeting_another_writers_commit_of_its_shard_is_fenced(
    settings: WarehouseSettings,
) -> None:
    # GIVEN two writers that both hold the same shard's batches (two readers of one shard)
    owner = claim_tables(_tables(settings), STREAM).owner
    first = ExactlyOnceWriter(_tables(settings), 60, owner=owner)
    second = ExactlyOnceWriter(_tables(settings), 60, owner=owner)
    batches = _chain("shard-0", 2, 30, 0)
    for writer in (first, second):
        for batch in batches:
            writer.add(batch)
    # WHEN the first commits, then the second tries
    first.flush()
    with pytest.raises(WriterFenced, match="another writer committed records of shard shard-0"):
        second.flush()
    # THEN the tables hold the records once, and the fenced writer records nothing at its stop
    assert second.catch_up() == []
    ids, counted = _readings(settings)
    assert len(ids) == 60 and set(ids.values()) == {1} and counted == 60


def test_a_newer_jobs_claim_fences_the_running_writer(settings: WarehouseSettings) -> None:
    # GIVEN a running job's writer that committed once
    old = claim_tables(_tables(settings), STREAM).owner
    writer = ExactlyOnceWriter(_tables(settings), 60, owner=old)
    batches = _chain("shard-0", 3, 20, 0)
    writer.add(batches[0])
    writer.flush()
    # WHEN a second job starts on the same tables
    new = claim_tables(_tables(settings), STREAM).owner
    assert new.epoch == old.epoch + 1
    # THEN the old writer's next flush is fenced, naming the newer job, and writes nothing
    writer.add(batches[1])
    with pytest.raises(WriterFenced, match=f"epoch {new.epoch}"):
        writer.flush()
    assert _readings(settings)[1] == 20
    # AND the new job writes on from the committed positions
    newer = ExactlyOnceWriter(_tables(settings), 60, owner=new)
    newer.add(batches[1])
    newer.add(batches[2])
    newer.flush()
    ids, counted = _readings(settings)
    assert len(ids) == 60 and set(ids.values()) == {1} and counted == 60
    assert table_owner(_tables(settings)["iot_readings"]) == new


def test_the_tables_refuse_a_recreated_or_different_stream_unless_told(
    settings: WarehouseSettings,
) -> None:
    # GIVEN tables holding positions of stream "events"
    owner = claim_tables(_tables(settings), STREAM).owner
    writer = ExactlyOnceWriter(_tables(settings), 60, owner=owner)
    writer.add(_batch("shard-0", 100, 5, 0, None))
    writer.flush()
    recreated = StreamIdentity(STREAM.name, STREAM.arn, STREAM.created + 3_600)
    # THEN the same stream is accepted, a recreated one refused with the option to use
    claim_tables(_tables(settings), STREAM)
    with pytest.raises(ConfigError, match="--on_new_stream start_from_position"):
        claim_tables(_tables(settings), recreated)
    # AND another stream is refused, naming the stream the tables belong to
    other = StreamIdentity("other", STREAM.arn.replace("events", "other"), STREAM.created)
    with pytest.raises(ConfigError, match="--stream_name events"):
        claim_tables(_tables(settings), other)
    assert table_positions(_tables(settings)["iot_readings"]) == {"shard-0": 104}
    # WHEN told to start the recreated stream from the start position
    claim = claim_tables(_tables(settings), recreated, on_new_stream="start_from_position")
    # THEN the old positions are gone, and the tables now belong to the new stream
    assert claim.reset
    assert all(table_positions(t) == {} for t in _tables(settings).values())
    claim_tables(_tables(settings), recreated)
