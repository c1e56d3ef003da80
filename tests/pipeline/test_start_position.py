"""Where the job starts reading: table positions first, else the job's first start, never a later LATEST."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from beam_jobs.pipeline import start_position
from beam_jobs.run import job_flags
from beam_jobs.settings import JobSettings, load_job_settings
from sluice.tables.warehouse import POSITIONS_PROPERTY, START_PROPERTY, ensure_tables, open_catalog

T1 = 1_795_000_000.0
T2 = T1 + 3600


def settings_for(tmp_path, *flags: str) -> JobSettings:
    _, overrides = job_flags().parse(["--state_dir", str(tmp_path), *flags])
    return load_job_settings(overrides)


def tables_of(settings: JobSettings):
    warehouse = settings.warehouse_settings()
    return ensure_tables(open_catalog(warehouse), warehouse)


def test_latest_is_pinned_to_the_first_start(tmp_path):
    settings = settings_for(tmp_path, "--start_position", "latest")
    # GIVEN a first start at T1
    first = start_position(settings, now=T1)
    assert (first.kind, first.timestamp) == ("AT_TIMESTAMP", datetime.fromtimestamp(T1, UTC))
    assert all(t.properties[START_PROPERTY] == repr(T1) for t in tables_of(settings).values())
    # WHEN the job starts again an hour later with the same options
    again = start_position(settings, now=T2)
    # THEN it still reads from T1: what arrived while it was down is not skipped
    assert again.timestamp == datetime.fromtimestamp(T1, UTC) and again.after_sequence == {}


def test_shard_missing_from_one_table_is_read_from_the_first_start(tmp_path):
    settings = settings_for(tmp_path, "--start_position", "latest")
    start_position(settings, now=T1)
    tables = tables_of(settings)
    # GIVEN a run killed between two tables' commits: only iot_readings holds shard-1's position
    for name, table in tables.items():
        positions = {"shard-0": "100", **({"shard-1": "50"} if name == "iot_readings" else {})}
        table.append(
            table.schema().as_arrow().empty_table(),
            snapshot_properties={POSITIONS_PROPERTY: json.dumps(positions)},
        )
    # WHEN the job restarts later
    restart = start_position(settings, now=T2)
    # THEN shard-0 resumes after its position; shard-1 is read again from the first start
    assert restart.after_sequence == {"shard-0": "100"}
    assert (restart.kind, restart.timestamp) == ("AT_TIMESTAMP", datetime.fromtimestamp(T1, UTC))


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [(("trim_horizon", repr(T1)), "trim_horizon"), ((repr(T2), repr(T1)), repr(T1))],
)
def test_tables_that_disagree_keep_the_earliest_start(tmp_path, recorded, expected):
    settings = settings_for(tmp_path)
    tables = list(tables_of(settings).values())
    for table, value in zip(tables, recorded, strict=False):
        with table.transaction() as tx:
            tx.set_properties({START_PROPERTY: value})
    start = start_position(settings, now=T2)
    assert all(t.properties[START_PROPERTY] == expected for t in tables_of(settings).values())
    assert start.kind == ("TRIM_HORIZON" if expected == "trim_horizon" else "AT_TIMESTAMP")
