"""The cost model's arithmetic, against cases computed by hand from round measured figures.

Month = 730 h = 2,628,000 s; GB = 2^30, TB = 2^40 bytes; prices from the packaged table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from sluice.cost import CostSettings, Measurements, estimate, load_measurements, load_prices
from sluice.cost.model import (
    athena_query_bytes,
    kinesis_batch,
    provisioned_shards,
    rounded_units,
    tiered,
)
from sluice.cost.prices import PriceTable

MONTH = 2_628_000
GIB = 2**30
TIB = 2**40
REPORT = Path(__file__).resolve().parents[2] / "reports" / "measurements.json"


def _source(
    *, input_bytes: float, envelope: float, aggregated: float, batch: int, records: int,
    edge_seconds: float, archive: float, parquet: float,
) -> dict[str, Any]:  # fmt: skip
    total = batch * aggregated
    return {
        "events": 1000,
        "input_bytes_per_event": input_bytes,
        "envelope_bytes_per_event": envelope,
        "on_demand_kb_per_event": 1.0,
        "put_units_per_event": 1.0,
        "aggregated_bytes_per_event": aggregated,
        "batches": [
            {
                "events_per_batch": batch,
                "batches": 1,
                "kinesis_records": records,
                "kinesis_bytes": int(total),
                "on_demand_kb": math.ceil(total / 1024),
                "put_units": math.ceil(total / 25600),
                "edge_seconds": edge_seconds,
            }
        ],
        "edge_seconds_per_event": edge_seconds / batch,
        "archive_bytes_per_event": archive,
        "parquet_bytes_per_event": parquet,
    }


MEASURED = Measurements.model_validate(
    {
        "schema_version": 1,
        "measured_at": "2026-12-01T00:00:00Z",
        "command": "hand-made for the tests",
        "machine": "none",
        "max_aggregate_bytes": 1_000_000,
        "sources": {
            "iot": _source(
                input_bytes=100,
                envelope=500,
                aggregated=400,
                batch=10,
                records=1,
                edge_seconds=0.001,
                archive=50,
                parquet=40,
            ),
            "weblog": _source(
                input_bytes=200,
                envelope=700,
                aggregated=600,
                batch=5000,
                records=3,
                edge_seconds=0.5,
                archive=80,
                parquet=100,
            ),
            "feed": _source(
                input_bytes=300,
                envelope=800,
                aggregated=800,
                batch=10,
                records=1,
                edge_seconds=0.01,
                archive=100,
                parquet=500,
            ),
        },
        "commits": {
            "commits": 5,
            "events_per_commit": 1000,
            "tables": 6,
            "tables_committed_per_commit": 6,
            "data_files_per_commit": 6,
            "event_data_files_per_commit": 3,
            "files_written_per_commit": 26,
            "files_read_per_commit": 40,
            "metadata_bytes_per_commit": 100_000,
            "window_bytes_per_event": 10,
        },
        "job": {"stages_events_per_second": 10_000},
    }
)
PRICES = load_prices()


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)


def iot_only(**fields: Any) -> CostSettings:
    """1,000 IoT readings/s in requests of 10, nothing else."""
    base: dict[str, Any] = {
        "iot_events_per_second": 1000,
        "iot_readings_per_request": 10,
        "weblog_lines_per_second": 0,
        "feed_polls_per_minute": 0,
    }
    return CostSettings(**{**base, **fields})


def line(settings: CostSettings, component: str, prices: PriceTable = PRICES) -> Any:
    return estimate(settings, prices, MEASURED).component(component)


# --- building blocks ------------------------------------------------------------------------------


def test_records_are_rounded_up_to_whole_units_each() -> None:
    # GIVEN one record of 1,500 bytes / three records (two full of 1,000 bytes) holding 2,500
    # THEN 1 KB rounding bills 2 KB / 1 + 1 + 1 KB
    assert rounded_units(1500, 1, 1000, 1024) == 2
    assert rounded_units(2500, 3, 1000, 1024) == 3
    assert rounded_units(0, 0, 1000, 1024) == 0


def test_an_aggregate_is_billed_by_1kb_and_25kb_units() -> None:
    iot = MEASURED.source("iot")
    # 10 readings x 400 B = 4,000 B: one record, 4 KB on-demand, one 25 KB PUT unit
    ten = kinesis_batch(iot, 10, aggregated=True, max_aggregate_bytes=1_000_000, prices=PRICES)
    assert (ten.records, ten.bytes, ten.on_demand_kb, ten.put_units) == (1, 4000, 4, 1)
    # 100 readings = 40,000 B: one record, 40 KB (39.06 rounded up), two PUT units (25 KB + 15 KB)
    hundred = kinesis_batch(iot, 100, aggregated=True, max_aggregate_bytes=1_000_000, prices=PRICES)
    assert (hundred.records, hundred.on_demand_kb, hundred.put_units) == (1, 40, 2)
    # 5,000 log lines x 600 B = 3,000,000 B: three full aggregates of 1,000,000 B
    logs = kinesis_batch(
        MEASURED.source("weblog"), 5000, aggregated=True, max_aggregate_bytes=1_000_000,
        prices=PRICES,
    )  # fmt: skip
    assert logs.records == 3
    assert logs.on_demand_kb == 3 * math.ceil(1_000_000 / 1024)
    assert logs.put_units == 3 * math.ceil(1_000_000 / 25600)


def test_one_record_per_event_bills_each_record_a_whole_kb() -> None:
    single = kinesis_batch(
        MEASURED.source("iot"), 10, aggregated=False, max_aggregate_bytes=1_000_000, prices=PRICES
    )
    # 500 B envelopes: ten records, each 1 KB on-demand and one PUT unit, one 5 KB Firehose unit
    assert (single.records, single.bytes, single.on_demand_kb, single.put_units) == (
        10,
        5000,
        10,
        10,
    )
    assert single.firehose_units == 10


@pytest.mark.parametrize(
    ("bytes_per_second", "records_per_second", "consumers", "shards"),
    [
        (0, 0, 1, 1),  # a stream has at least one shard
        (1.5 * 2**20, 500, 1, 2),  # 1 MiB/s in per shard
        (100_000, 2500, 1, 3),  # 1,000 records/s per shard
        (1.5 * 2**20, 10, 3, 3),  # 2 MiB/s out per shard, shared: 4.5 MiB/s of reads
    ],
)
def test_shards_needed(
    bytes_per_second: float, records_per_second: float, consumers: int, shards: int
) -> None:
    assert provisioned_shards(bytes_per_second, records_per_second, consumers, PRICES) == shards


def test_tiers_fill_in_order() -> None:
    tiers = [(300, 1.0), (700, 0.9), (math.inf, 0.8)]
    assert tiered(100, tiers) == 100
    assert tiered(1000, tiers) == pytest.approx(300 + 630)
    assert tiered(13_140, tiers) == pytest.approx(300 + 630 + 12_140 * 0.8)


def test_athena_scans_every_partition_its_range_touches() -> None:
    rate = 1000.0  # bytes of event table per second
    assert athena_query_bytes(rate, 1, "hour", 365, 1.0) == 3600 * rate
    assert athena_query_bytes(rate, 1.5, "hour", 365, 1.0) == 2 * 3600 * rate
    assert athena_query_bytes(rate, 1, "day", 365, 1.0) == 86_400 * rate
    assert athena_query_bytes(rate, 30, "day", 365, 0.5) == 2 * 86_400 * rate * 0.5
    assert athena_query_bytes(rate, 1, "none", 30, 1.0) == 30 * 86_400 * rate
    assert athena_query_bytes(rate, 48, "day", 1, 1.0) == 86_400 * rate  # never more than held


# --- components ---------------------------------------------------------------------------------


def test_api_gateway_requests_and_512_kb_metering_and_tiers() -> None:
    # 100 requests/s of 1,000 B: 262.8 M requests at $1.00/M
    assert line(iot_only(), "API Gateway HTTP API").monthly_usd == pytest.approx(262.8)
    # 10,000 readings x 100 B = 1,000,000 B per request: metered as 2 requests of 512 KB
    big = iot_only(iot_events_per_second=10_000, iot_readings_per_request=10_000)
    assert line(big, "API Gateway HTTP API").monthly_usd == pytest.approx(2 * MONTH / 1e6)
    # 5,000 requests/s = 13,140 M: 300 M at $1.00, 700 M at $0.90, the rest at $0.80
    many = iot_only(iot_events_per_second=5000, iot_readings_per_request=1)
    expected = 300 + 700 * 0.9 + (5000 * MONTH / 1e6 - 1000) * 0.8
    assert line(many, "API Gateway HTTP API").monthly_usd == pytest.approx(expected)


def test_lambda_requests_and_gb_seconds_from_measured_cpu_time() -> None:
    # 1 ms of CPU per request (10 x 0.1 ms) at a full vCPU (1,769 MB) + 20 ms wait = 21 ms
    settings = iot_only(iot_lambda_memory_mb=1769)
    invocations = 100 * MONTH
    expected = invocations / 1e6 * 0.20 + invocations * 1769 / 1024 * 0.021 * 0.0000166667
    assert line(settings, "Lambda (edges)").monthly_usd == pytest.approx(expected)
    # at 1,024 MB the CPU share is 1024/1769: 1.73 ms of CPU, billed 22 ms (1 ms granularity)
    slower = line(iot_only(iot_lambda_memory_mb=1024), "Lambda (edges)")
    assert slower.quantities["iot_billed_ms"] == 22


def test_kinesis_on_demand_and_provisioned_by_hand() -> None:
    settings = iot_only()
    # per second: 100 aggregates of 4,000 B = 400,000 B, 400 KB billed in, 100 PUT units
    on_demand = line(settings, "Kinesis on-demand")
    expected = 730 * 0.04 + 400 * 1024 * MONTH / GIB * 0.08 + 400_000 * MONTH * 2 / GIB * 0.04
    assert on_demand.monthly_usd == pytest.approx(expected)
    assert on_demand.counted
    provisioned = line(settings, "Kinesis provisioned")
    assert provisioned.quantities["shards"] == 1
    assert provisioned.monthly_usd == pytest.approx(730 * 0.015 + 100 * MONTH / 1e6 * 0.014)
    assert not provisioned.counted


def test_kinesis_without_aggregation_pays_per_record() -> None:
    # 2,500 records/s of 500 B: 3 shards (1,000 records/s each); 2,500 KB/s billed in on-demand
    settings = iot_only(iot_events_per_second=2500, aggregation=False)
    provisioned = line(settings, "Kinesis provisioned")
    assert provisioned.quantities["shards"] == 3
    assert provisioned.monthly_usd == pytest.approx(3 * 730 * 0.015 + 2500 * MONTH / 1e6 * 0.014)
    on_demand = line(settings, "Kinesis on-demand")
    assert on_demand.quantities["gb_in_per_month"] == pytest.approx(2500 * 1024 * MONTH / GIB)


def test_kinesis_retention_beyond_a_day() -> None:
    settings = iot_only(kinesis_retention_days=3, kinesis_mode="provisioned")
    provisioned = line(settings, "Kinesis provisioned")
    assert provisioned.monthly_usd == pytest.approx(
        730 * 0.015 + 100 * MONTH / 1e6 * 0.014 + 730 * 0.02
    )
    assert provisioned.counted
    on_demand = line(iot_only(kinesis_retention_days=3), "Kinesis on-demand")
    stored_gb_day = 400_000 * 86_400 / GIB
    base = 730 * 0.04 + 400 * 1024 * MONTH / GIB * 0.08 + 400_000 * MONTH * 2 / GIB * 0.04
    assert on_demand.monthly_usd == pytest.approx(base + 2 * stored_gb_day * 0.10)


def test_firehose_rounds_each_record_to_5_kb() -> None:
    # 100 aggregates/s of 4,000 B: 100 x 5 KB billed; 400,000 B/s delivered; one object per 300 s
    firehose = line(iot_only(), "Firehose (raw archive)")
    expected = (
        100 * 5120 * MONTH / GIB * 0.029 + 400_000 * MONTH / GIB * 0.02 + MONTH / 300 / 1000 * 0.005
    )
    assert firehose.monthly_usd == pytest.approx(expected)
    # rounding each de-aggregated 500 B user record instead: 1,000 x 5 KB per second
    worst = line(iot_only(firehose_rounding="user_record"), "Firehose (raw archive)")
    assert worst.quantities["gb_billed_per_month"] == pytest.approx(1000 * 5120 * MONTH / GIB)


def test_flink_kpus_plus_one_orchestration_kpu() -> None:
    # 25,000 events/s at 10,000 per KPU: 3 KPUs + 1 orchestration; 50 GB storage per KPU
    flink = line(iot_only(iot_events_per_second=25_000), "Managed Flink (MSF)")
    assert flink.quantities["kpus"] == 3
    assert flink.monthly_usd == pytest.approx(4 * 730 * 0.11 + 3 * 50 * 0.10)
    given = line(iot_only(msf_events_per_kpu=1000), "Managed Flink (MSF)")
    assert given.quantities["kpus"] == 1


def test_flink_kpus_come_from_the_pyflink_application_when_it_was_measured() -> None:
    # MSF runs the PyFlink application, so its events/s per slot beats the Beam job's figure
    job = {**MEASURED.job.model_dump(), "beam_job_events_per_second": 8_000}
    beam_only = MEASURED.model_copy(update={"job": type(MEASURED.job)(**job)})
    with_app = MEASURED.model_copy(
        update={"job": type(MEASURED.job)(**{**job, "pyflink_app_events_per_second": 1_250})}
    )
    settings = iot_only(iot_events_per_second=5_000)
    assert (
        estimate(settings, PRICES, beam_only).component("Managed Flink (MSF)").quantities["kpus"]
        == 1
    )
    flink = estimate(settings, PRICES, with_app).component("Managed Flink (MSF)")
    assert flink.quantities["kpus"] == 4
    assert "PyFlink application" in flink.detail


def test_s3_storage_and_requests_by_hand() -> None:
    storage = line(iot_only(), "S3 storage")
    archive = 50 * 1000 * 90 * 86_400 / GIB
    tables = (40 + 10) * 1000 * 365 * 86_400 / GIB
    metadata = 7 * 86_400 / 60 * 100_000 / GIB
    assert storage.monthly_usd == pytest.approx((archive + tables + metadata) * 0.023)
    requests = line(iot_only(), "S3 requests")
    commits = MONTH / 60
    objects = MONTH / 300  # by time: 50 kB/s fills 128 MB buffers more slowly
    queries = 100 * MONTH / 86_400
    puts = commits * 26 + objects
    gets = commits * 40 + queries * (3600 / 60 * 3 + 40)
    assert requests.quantities["puts_per_month"] == pytest.approx(puts)
    assert requests.monthly_usd == pytest.approx(puts / 1000 * 0.005 + gets / 1000 * 0.0004)


def test_glue_first_million_objects_and_requests_free() -> None:
    queries = 100 * MONTH / 86_400
    # 60 s commits: 43,800 x 6 tables x 2 requests + queries < 1 M: free
    assert line(iot_only(), "Glue Data Catalog").monthly_usd == 0
    # 1 s commits: 31.5 M requests, the first million free, then $1 per million
    requests = MONTH * 6 * 2 + queries
    every_second = line(iot_only(commit_interval_seconds=1), "Glue Data Catalog")
    assert every_second.monthly_usd == pytest.approx((requests - 1e6) / 1e6)
    # objects: 6 tables + the database; over a free tier of 5 they cost $1 per 100,000
    prices = PRICES.model_copy(deep=True)
    prices.prices["glue_free_objects"] = prices.prices["glue_free_objects"].model_copy(
        update={"value": 5}
    )
    assert line(iot_only(), "Glue Data Catalog", prices).monthly_usd == pytest.approx(2 / 100_000)


def test_athena_bills_at_least_10_mb_per_query() -> None:
    queries = 100 * MONTH / 86_400
    # 1 reading/s: an hour partition holds 144,000 B, billed as 10 MB
    tiny = line(iot_only(iot_events_per_second=1, athena_partitioning="hour"), "Athena")
    assert tiny.quantities["bytes_billed_per_query"] == 10 * 2**20
    assert tiny.monthly_usd == pytest.approx(queries * 10 * 2**20 / TIB * 5)
    # 1,000 readings/s x 40 B, a day partition per query: 3.456 GB each
    day = line(iot_only(), "Athena")
    assert day.monthly_usd == pytest.approx(queries * 40_000 * 86_400 / TIB * 5)


def test_the_total_counts_one_kinesis_mode_and_one_processing_path() -> None:
    result = estimate(iot_only(), PRICES, MEASURED)
    counted = [li.monthly_usd for li in result.lines if li.counted]
    assert result.total_usd == pytest.approx(sum(counted))
    assert len(counted) == len(result.lines) - 2
    assert not result.component("Lambda (transform)").counted


# --- savings ------------------------------------------------------------------------------------


def test_savings_compare_the_options() -> None:
    result = estimate(iot_only(iot_events_per_second=2500), PRICES, MEASURED)
    savings = {s.name.split(" (")[0]: s for s in result.savings}
    kpl = savings["KPL aggregation"]
    assert kpl.options["KPL aggregation"] < kpl.options["one record per event"]
    assert kpl.saves_usd > 0
    commit = savings["Commit interval"]
    assert commit.options["10 s"] > commit.options["60 s"] > commit.options["900 s"]
    assert commit.figures["10 s"]["data_files_per_day"] == 6 * 8640
    part = savings["Partitioning"]
    assert part.options["none"] > part.options["day"] > part.options["hour"]
    batching = savings["IoT readings per request"]
    assert batching.options["1 per request"] > batching.options["10 per request"]


def test_break_even_of_capacity_modes() -> None:
    # a steady stream: provisioned ($0.015/shard-hour) beats on-demand's $0.04/stream-hour at any
    # rate; on-demand wins only once provisioned shards must be sized for high peaks
    result = estimate(iot_only(), PRICES, MEASURED)
    mode = next(s for s in result.savings if s.name == "Kinesis capacity mode")
    assert mode.options["provisioned"] < mode.options["on-demand"]
    peak = mode.figures["break_even"]["peak_factor"]
    on_demand = mode.options["on-demand"]
    settings = iot_only(peak_factor=peak)
    assert line(settings, "Kinesis provisioned").monthly_usd >= on_demand
    below = iot_only(peak_factor=peak / 10 ** (1 / 20))
    assert line(below, "Kinesis provisioned").monthly_usd < on_demand


# --- the committed measurement file -------------------------------------------------------------


@pytest.mark.skipif(not REPORT.exists(), reason="no reports/measurements.json")
def test_derived_batches_match_the_measured_edge_batches() -> None:
    measured = load_measurements(REPORT)
    for name, source in measured.sources.items():
        for batch in source.batches:
            derived = kinesis_batch(
                source, batch.events_per_batch, aggregated=True,
                max_aggregate_bytes=measured.max_aggregate_bytes, prices=PRICES,
            )  # fmt: skip
            per_batch = batch.kinesis_records / batch.batches
            assert abs(derived.records - per_batch) <= 1, (name, batch.events_per_batch)
            kb = batch.on_demand_kb / batch.batches
            assert derived.on_demand_kb == pytest.approx(kb, rel=0.05, abs=1), name


# --- the Lambda path (issue 15) -------------------------------------------------------------------


def test_transform_lambda_invocations_and_duration_by_hand() -> None:
    # 1,000 readings/s in requests of 10: 100 Kinesis records/s of 4 KB. On demand: 4 shards (what
    # an on-demand stream starts with), each invoked once per 60 s window (25 records/s, far below
    # 10,000 records or 6 MB a window): 4/60 invocations/s of 15,000 events each.
    transform = line(iot_only(), "Lambda (transform)")
    q = transform.quantities
    assert (q["shards"], q["events_per_invocation"]) == (4, pytest.approx(15_000))
    # 33 ms fixed + 15,000 x 233 us of CPU on a full vCPU (1,769 MB), + 1,500 ms of I/O wait
    assert q["billed_ms"] == math.ceil(1500 + 33 + 15_000 * 0.233)
    invocations = 4 / 60 * MONTH
    gb_seconds = invocations * 1769 / 1024 * q["billed_ms"] / 1000
    assert q["invocations_per_month"] == pytest.approx(invocations)
    assert transform.monthly_usd == pytest.approx(
        invocations / 1e6 * PRICES["lambda_per_million_requests"]
        + gb_seconds * PRICES["lambda_per_gb_second"]
    )
    assert not transform.counted  # processing=flink by default


def test_transform_lambda_on_fewer_shards_half_a_vcpu_and_full_batches() -> None:
    # 1 shard, 884.5 MB (half a vCPU: CPU time doubles), batches capped at 1,000 records:
    # 100 records/s fill 6 batches a minute, more than the one window.
    settings = iot_only(
        transform_shards=1, transform_lambda_memory_mb=884, transform_batch_size=1000
    )
    q = line(settings, "Lambda (transform)").quantities
    assert q["shards"] == 1
    assert q["invocations_per_month"] == pytest.approx(0.1 * MONTH)
    assert q["events_per_invocation"] == pytest.approx(10_000)
    share = 884 / 1769
    assert q["billed_ms"] == math.ceil(1500 + (33 + 10_000 * 0.233) / share)


def test_on_the_lambda_path_every_invocation_is_a_commit() -> None:
    flink = line(iot_only(), "S3 requests").quantities
    on_lambda = estimate(iot_only(processing="lambda"), PRICES, MEASURED)
    requests = on_lambda.component("S3 requests").quantities
    # 4 shards x one commit a minute, against the job's one commit a minute
    assert requests["data_files_per_day"] == pytest.approx(4 * flink["data_files_per_day"])
    assert on_lambda.component("Lambda (transform)").counted
    assert not on_lambda.component("Managed Flink (MSF)").counted


def test_the_paths_cross_where_flink_becomes_cheaper() -> None:
    from sluice.cost.model import processing_crossover

    crossover = processing_crossover(iot_only(), PRICES, MEASURED)
    assert crossover is not None and 100 < crossover < 1_000_000

    def options(rate: float) -> dict[str, float]:
        result = estimate(iot_only(iot_events_per_second=rate), PRICES, MEASURED)
        (saving,) = [s for s in result.savings if s.name.startswith("Processing path")]
        return saving.options

    below, above = options(crossover / 2), options(crossover * 2)
    assert below["lambda"] < below["flink"] and above["flink"] < above["lambda"]
    # A few events a second: cents on Lambda against MSF's floor of two KPUs
    tiny = line(iot_only(iot_events_per_second=5), "Lambda (transform)")
    assert tiny.monthly_usd < 10 < 150 < line(iot_only(), "Managed Flink (MSF)").monthly_usd
