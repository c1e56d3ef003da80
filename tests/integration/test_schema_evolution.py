"""New IoT metrics, new feed fields and new optional columns reach Iceberg without breaking anything."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.table import Table
from pyiceberg.types import StringType

from sluice.analysts.query import run
from sluice.core.contracts import Envelope, FeedItem, IotReading, Source
from sluice.stream.envelopes import encode, wrap_feed_item, wrap_reading
from sluice.stream.stages import InputRecord, JobBatch, decode_batch, filter_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)
from sluice.transform.filters import DEFAULT_RULES, RecordFilter

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OLD_METRIC_SQL = "SELECT count(metrics['t']), sum(metrics['t']) FROM iot_readings"
OLD_FEED_SQL = "SELECT item_id, fields['mag'] FROM feed_items ORDER BY item_id"


def batch(envelopes: Sequence[Envelope], first: int, previous: int | None) -> JobBatch:
    arrival = T0 + timedelta(seconds=30)
    records = [
        InputRecord(first + i, 0, arrival.timestamp(), encode(e)) for i, e in enumerate(envelopes)
    ]
    decoded = decode_batch("s", records, previous_sequence=previous)
    filtered = filter_batch(decoded, {Source.WEBLOG: RecordFilter(DEFAULT_RULES, "weblog")})
    return window_batch(filtered, 60, 600)


def readings(first: int, metrics: dict[str, float]) -> list[Envelope]:
    return [
        wrap_reading(
            IotReading(
                device_id="d1", event_time=T0 + timedelta(seconds=first + i), metrics=metrics
            ),
            ingest_time=T0 + timedelta(seconds=30),
        )
        for i in range(3)
    ]


def feed_item(item_id: str, fields: dict[str, Any]) -> Envelope:
    item = FeedItem(feed="usgs", item_id=item_id, event_time=T0, fields=fields)
    return wrap_feed_item(item, ingest_time=T0 + timedelta(seconds=30))


@pytest.fixture
def warehouse(tmp_path: Path) -> tuple[WarehouseSettings, Any, dict[str, Table]]:
    settings = WarehouseSettings(state_dir=tmp_path / "state")
    catalog = open_catalog(settings)
    return settings, catalog, ensure_tables(catalog, settings)


def test_new_metric_and_feed_field_need_no_schema_change(warehouse) -> None:
    settings, catalog, tables = warehouse
    writer = ExactlyOnceWriter(tables, 60)
    schema_ids = {n: t.schema().schema_id for n, t in tables.items()}
    # GIVEN rows written before devices and feeds send anything new
    writer.add(batch([*readings(0, {"t": 1.0}), feed_item("a", {"mag": 2.5})], 0, None))
    writer.flush()
    old_metric = run(catalog, settings.namespace, OLD_METRIC_SQL)
    old_feed = run(catalog, settings.namespace, OLD_FEED_SQL)
    # WHEN a new metric and a new feed field appear
    new = [*readings(10, {"t": 1.0, "humidity": 40.0}), feed_item("b", {"mag": 3.1, "tsunami": 1})]
    writer.add(batch(new, 4, 3))
    writer.flush()
    # THEN no schema changed, old queries see the old rows unchanged plus the new ones
    assert {n: t.refresh().schema().schema_id for n, t in tables.items()} == schema_ids
    assert old_metric[1] == [(3, 3.0)]
    assert run(catalog, settings.namespace, OLD_METRIC_SQL)[1] == [(6, 6.0)]
    assert run(catalog, settings.namespace, OLD_FEED_SQL)[1] == [*old_feed[1], ("b", "3.1")]
    # and the new names are queryable (absent in older rows -> NULL)
    new_metric = "SELECT count(metrics['humidity']), max(metrics['humidity']) FROM iot_readings"
    assert run(catalog, settings.namespace, new_metric)[1] == [(3, 40.0)]
    tsunami = "SELECT item_id, fields['tsunami'] FROM feed_items ORDER BY item_id"
    assert run(catalog, settings.namespace, tsunami)[1] == [("a", None), ("b", "1")]
    windows = "SELECT metric, sum(count) FROM iot_metrics_1m GROUP BY 1 ORDER BY 1"
    assert run(catalog, settings.namespace, windows)[1] == [("humidity", 3), ("t", 6)]


def add_firmware_column(table: Table) -> None:
    """A real schema evolution: one new optional column (a new id, as sluice.tables.specs requires)."""
    with table.update_schema() as update:
        update.add_column("firmware", StringType(), doc="Device firmware version")


def test_new_optional_column_keeps_old_queries_and_positions(warehouse) -> None:
    settings, catalog, tables = warehouse
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(batch(readings(0, {"t": 1.0}), 0, None))
    writer.flush()
    before = run(catalog, settings.namespace, OLD_METRIC_SQL)
    add_firmware_column(tables["iot_readings"])
    # old queries answer the same; the new column reads NULL for old rows; positions are intact
    assert run(catalog, settings.namespace, OLD_METRIC_SQL) == before
    firmware = "SELECT count(*), count(firmware) FROM iot_readings"
    assert run(catalog, settings.namespace, firmware)[1] == [(3, 0)]
    assert table_positions(tables["iot_readings"]) == {"s": 2}


def test_new_optional_column_keeps_writer_and_old_queries_working(warehouse) -> None:
    settings, catalog, tables = warehouse
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(batch(readings(0, {"t": 1.0}), 0, None))
    writer.flush()
    before = run(catalog, settings.namespace, OLD_METRIC_SQL)
    # WHEN an optional column is added (a new id, as sluice.tables.specs requires)
    table = tables["iot_readings"]
    add_firmware_column(table)
    assert table.schema().find_field("firmware").required is False
    # THEN the running writer (rows built with the old schema) still appends; the new column is NULL
    writer.add(batch(readings(10, {"t": 1.0}), 3, 2))
    report = writer.flush()
    assert report.rows["iot_readings"] == 3
    assert table_positions(table.refresh()) == {"s": 5}
    assert run(catalog, settings.namespace, "SELECT count(*), count(firmware) FROM iot_readings")[
        1
    ] == [(6, 0)]
    # old queries answer as before over the old rows, and include the new ones
    assert before[1] == [(3, 3.0)]
    assert run(catalog, settings.namespace, OLD_METRIC_SQL)[1] == [(6, 6.0)]
    # a job stopped cleanly (idle tables record their positions) and restarted on the evolved
    # table resumes from its positions
    writer.catch_up()
    resumed = ExactlyOnceWriter(ensure_tables(catalog, settings), 60)
    assert resumed.resume_positions() == {"s": 5}


def test_a_table_of_an_older_sluice_gains_the_new_web_columns(tmp_path: Path) -> None:
    from pyiceberg.schema import Schema

    from sluice.parsing.weblog import LogParser
    from sluice.stream.envelopes import wrap_access_log
    from sluice.tables.specs import TABLES

    # GIVEN a warehouse whose web_requests table predates the nginx columns (ids 1-27), with a row
    settings = WarehouseSettings(state_dir=tmp_path / "state")
    catalog = open_catalog(settings)
    catalog.create_namespace(settings.namespace)
    spec = TABLES["web_requests"]
    old = Schema(*(f for f in spec.schema.fields if f.field_id <= 27))
    catalog.create_table(
        f"{settings.namespace}.web_requests", schema=old, partition_spec=spec.partition_spec()
    )
    before = {
        f.name for f in catalog.load_table(f"{settings.namespace}.web_requests").schema().fields
    }
    assert "invalid_utf8" not in before
    # WHEN the job opens the tables and writes records using the new columns
    tables = ensure_tables(catalog, settings)
    assert {f.name for f in tables["web_requests"].schema().fields} == {
        f.name for f in spec.schema.fields
    }
    parser = LogParser('$remote_addr [$time_local] "$request" $status $upstream_response_time')
    lines = [
        f'192.0.2.1 [26/Nov/2026:12:00:0{i} +0000] "GET /\\xFF HTTP/1.1" 200 0.010, 0.002 : 0.004'
        for i in range(3)
    ]
    records = parser.parse_batch(lines, now=T0).valid
    envelopes = [wrap_access_log(r, "f", i, ingest_time=T0) for i, r in enumerate(records)]
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(batch(envelopes, 0, None))
    writer.flush()
    # THEN the new columns are queryable, and running ensure_tables again changes nothing
    sql = "SELECT count(*), bool_and(invalid_utf8), max(len(upstream_response_time)) FROM web_requests"
    assert run(catalog, settings.namespace, sql)[1] == [(3, True, 3)]
    schema_id = tables["web_requests"].refresh().schema().schema_id
    assert ensure_tables(catalog, settings)["web_requests"].schema().schema_id == schema_id
