"""The production catalog: AWS Glue with the warehouse on S3, against moto server over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3

from sluice.core.contracts import IotReading
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch
from sluice.tables.specs import TABLES
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)


def test_tables_in_glue_and_s3_get_rows_positions_and_windows(aws_env):
    # GIVEN a Glue catalog and an S3 warehouse on the local endpoint
    boto3.client("s3").create_bucket(Bucket="sluice-warehouse")
    settings = WarehouseSettings(
        catalog="glue", warehouse="s3://sluice-warehouse/tables", namespace="sluice_glue"
    )
    catalog = open_catalog(settings)
    tables = ensure_tables(catalog, settings)
    # THEN every table is registered in Glue
    glue_tables = boto3.client("glue").get_tables(DatabaseName="sluice_glue")["TableList"]
    assert sorted(t["Name"] for t in glue_tables) == sorted(TABLES)

    # WHEN a batch of readings is committed
    now = datetime.now(UTC)
    records = [
        InputRecord(i, 0, now.timestamp(), encode(wrap_reading(IotReading(device_id="d", event_time=now, metrics={"t": float(i)}))))
        for i in range(10)
    ]  # fmt: skip
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(window_batch(decode_batch("shard-0", records), 60, 600))
    writer.flush()

    # THEN the rows, the window and the positions are readable back through Glue, from S3
    readings = catalog.load_table("sluice_glue.iot_readings")
    assert readings.scan().to_arrow().num_rows == 10
    assert table_positions(readings) == {"shard-0": 9}
    [window] = catalog.load_table("sluice_glue.iot_metrics_1m").scan().to_arrow().to_pylist()
    assert (window["count"], window["sum"], window["max"]) == (10, 45.0, 9.0)
    objects = boto3.client("s3").list_objects_v2(Bucket="sluice-warehouse", Prefix="tables/")
    assert any(o["Key"].endswith(".parquet") for o in objects.get("Contents", []))
