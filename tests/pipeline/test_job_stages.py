"""The job's stages as Beam transforms, fed hand-built source batches (no Kinesis here).

ParseAndValidate | EnrichWithGeoIp | ApplyFilters | WindowAndAggregate (| WriteToIceberg), with the
demo GeoIP databases (synthetic, built in a temporary folder) and the default filter rules.

Runners, as checked on Beam 2.77:
- The FnApiRunner (the job's runner) refuses ``TestStream`` (``NotImplementedError:
  beam:transform:teststream:v1``), so it runs the test fed by ``beam.Create``.
- ``TestStream`` runs on the ``DirectRunner``: it sees the TestStream, skips Prism (nothing is
  downloaded) and the FnApiRunner, and runs the BundleBasedDirectRunner. That runner cannot run
  splittable DoFns, which these tests do not use. It makes one bundle per TestStream event and sets
  up a fresh DoFn for every bundle, so each bundle's ``WriteToIceberg`` writer starts from the
  positions in the tables, exactly as after a restart. Elements behind the watermark pass through
  ParDos untouched: nothing in these stages looks at the watermark.

Why lateness is judged by arrival time rather than the watermark (see ``sluice.stream.stages``): an event is
too late when Kinesis received it (``ApproximateArrivalTimestamp``) more than the allowed lateness
after its window ended. That is a property of the record. The watermark is a property of the run:
the slowest shard's progress, held back while a shard has not been polled, restarted from nothing
after a crash, far behind real time while a backlog is read. If the watermark decided, a run that
catches up after downtime would accept events a live run rejected, and a run killed and restarted
would decide differently from an uninterrupted one, so the tables would depend on when the job ran
and exactly-once replay would be impossible. ``test_lateness_is_decided_by_arrival_time_whatever_the_watermark``
runs the same batches under three watermark histories and requires the same output from each.

Runtime: about 5 s (five small pipelines, one on the FnApiRunner; 18 Iceberg commits).
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call,no-any-return"

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from job_testkit import (
    BOT_AGENT,
    CLIENTS,
    HEALTH_CHECK_PATH,
    LATENESS_SECONDS,
    TABLE_NAMES,
    WINDOW_SECONDS,
    Expected,
    Sent,
    committed_positions,
    edge_dead_letter,
    expect,
    feed_item,
    invalid_records,
    iot_window_values,
    read_tables,
    reading,
    request,
    source_batch,
)
from kinesis_testkit import TEST_RUNNER

from beam_jobs.metrics import query_counters
from beam_jobs.pipeline import (
    ApplyFilters,
    EnrichWithGeoIp,
    ParseAndValidate,
    WindowAndAggregate,
    WriteToIceberg,
)
from devkit.geoip_build import build_demo_databases
from sluice.core.config import load_settings
from sluice.core.contracts import Source
from sluice.stream.kinesis.records import SourceBatch
from sluice.stream.stages import JobBatch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)
from sluice.transform.filters import DEFAULT_RULES

# Beam's TestPipeline and TestStream are imported as Beam*: pytest would try to collect Test* classes.

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
"""Start of window W0 = [T0, T0 + 60 s); it closes for late data at T0 + 660 s (lateness 600 s)."""
W0 = T0
W10 = T0 + timedelta(minutes=10)
CLOSES_W0 = T0 + timedelta(seconds=WINDOW_SECONDS + LATENESS_SECONDS)
SHARD_A = "shardId-000000000000"
SHARD_B = "shardId-000000000001"
GB, US, SE = (next(c for c in CLIENTS if c[1] == iso) for iso in ("GB", "US", "SE"))
JP = next(c for c in CLIENTS if c[1] == "JP")
PRIVATE, UNKNOWN = CLIENTS[-2], CLIENTS[-1]
DIRECT_RUNNER = "DirectRunner"
"""Runs TestStream pipelines on the BundleBasedDirectRunner (see the module docstring)."""


@pytest.fixture(scope="module")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    city, asn = build_demo_databases(tmp_path_factory.mktemp("geoip"))
    return str(city), str(asn)


def stages(batches: Any, geoip: tuple[str, str]) -> Any:
    """The job's stages between the source and the writer, applied as ``beam_jobs.pipeline.build`` does."""
    return (
        batches
        | "ParseAndValidate" >> ParseAndValidate()
        | "EnrichWithGeoIp" >> EnrichWithGeoIp(*geoip)
        | "ApplyFilters" >> ApplyFilters(load_settings(filter_rules=DEFAULT_RULES))
        | "WindowAndAggregate" >> WindowAndAggregate(WINDOW_SECONDS, LATENESS_SECONDS)
    )


def observed(batch: JobBatch) -> Expected:
    """A job batch in the shape of ``job_testkit.Expected``: what it carries to the writer."""
    out = Expected(event_ids={})
    tables = {Source.IOT: "iot_readings", Source.WEBLOG: "web_requests", Source.FEED: "feed_items"}
    for source, table in tables.items():
        out.event_ids[table] = Counter(e.event_id for e in batch.events.get(source, []))
    for event in batch.events.get(Source.WEBLOG, []):
        geo = event.record.geo
        found = geo is not None and geo.status == "found"
        out.countries[event.event_id] = (geo.country_iso or "") if found else ""
        if "bot" in event.record.flags:
            out.bots.add(event.event_id)
    out.dead_letters = Counter(d.record.error_type.value for d in batch.dead_letters)
    out.iot_windows = {k: (s.count, s.sum, s.min, s.max) for k, s in batch.iot_windows.items()}
    out.web_windows = {k: (s.requests, s.bytes) for k, s in batch.web_windows.items()}
    return out


Summary = tuple[str, int, float, Expected]
"""(shard, last sequence, element timestamp, contents) of one job batch."""


def _at(batch: SourceBatch) -> TimestampedValue[SourceBatch]:
    return TimestampedValue(batch, batch.max_arrival)  # the source's element timestamp


class _Summarize(beam.DoFn):
    def process(self, batch: JobBatch, timestamp: Any = beam.DoFn.TimestampParam) -> Any:
        yield batch.shard_id, batch.last_sequence, float(timestamp), observed(batch)


def expected_summary(batch: SourceBatch, sent: list[Sent]) -> Summary:
    return batch.shard_id, int(batch.last_sequence), batch.max_arrival, expect(sent)


def test_stages_turn_batches_into_events_dead_letters_and_window_partials(
    geoip: tuple[str, str],
) -> None:
    # GIVEN two shards' batches holding every kind of input: readings, requests from placeable,
    # private and unknown addresses, a bot, a health check, a feed item, an edge's dead letter,
    # one record of each decoding failure and a reading that arrives after its window closed
    arrival = T0 + timedelta(seconds=50)
    sent_a = [
        reading("d1", T0 + timedelta(seconds=5), 1, temperature=20.0, humidity=40.5),
        reading("d1", T0 + timedelta(seconds=15), 2, temperature=22.25),
        reading("d2", T0 + timedelta(seconds=25), 3, temperature=30.0),
        request(T0 + timedelta(seconds=10), GB, 1, bytes_sent=100),
        request(T0 + timedelta(seconds=11), GB, 2, bytes_sent=300),
        request(T0 + timedelta(seconds=12), PRIVATE, 3, status=503, bytes_sent=7),
        request(T0 + timedelta(seconds=13), JP, 4, path="/products", bytes_sent=9),
        request(T0 + timedelta(seconds=14), US, 5, path="/about", agent=BOT_AGENT, bytes_sent=11),
        request(T0 + timedelta(seconds=15), US, 6, path=HEALTH_CHECK_PATH),
        feed_item("quake-1", T0 - timedelta(days=3)),
        edge_dead_letter(1, T0),
        *invalid_records(1, T0),
    ]
    sent_b = [
        reading("d3", T0 + timedelta(seconds=30), 4, temperature=-5.5),
        request(T0 + timedelta(seconds=31), UNKNOWN, 7, status=404, bytes_sent=13),
        reading("d3", T0 - timedelta(minutes=30), 5, too_late=True, temperature=1.0),
    ]
    batch_a = source_batch(SHARD_A, sent_a, first_sequence=100, arrival=arrival, previous=None)
    batch_b = source_batch(SHARD_B, sent_b, first_sequence=500, arrival=arrival, previous=None)
    # The expectations are plain values, not the job's own computation:
    assert expect(sent_a).web_windows == {
        ("/home", "2xx", "GB", W0): (2, 400),
        ("/home", "5xx", "", W0): (1, 7),
        ("/products", "2xx", "JP", W0): (1, 9),
        ("/about", "2xx", "US", W0): (1, 11),
    }
    assert expect(sent_a + sent_b).dead_letters == {
        "unparseable_line": 1, "invalid_json": 1, "invalid_encoding": 1, "missing_field": 1,
        "invalid_timestamp": 1, "schema_violation": 1, "too_late": 1,
    }  # fmt: skip

    # WHEN the stages run on the job's runner
    pipeline = BeamTestPipeline(runner=TEST_RUNNER, options=PipelineOptions(flags=[]))
    batches = pipeline | beam.Create([batch_a, batch_b]) | "Timestamp" >> beam.Map(_at)
    out = stages(batches, geoip)
    summaries = out | "Summarize" >> beam.ParDo(_Summarize())
    letters = out | "Letters" >> beam.FlatMap(
        lambda b: [(d.record.error_type.value, d.record.source.value, d.record.stage)
                   for d in b.dead_letters]
    )  # fmt: skip

    # THEN each batch carries its events per source (enriched, filtered, flagged), its dead letters
    # and its window partials, and every dead letter names the stage that made it
    assert_that(
        summaries,
        equal_to([expected_summary(batch_a, sent_a), expected_summary(batch_b, sent_b)]),
        label="CheckBatches",
    )
    assert_that(
        letters,
        equal_to([
            ("invalid_json", "iot", "parse"), ("invalid_encoding", "iot", "parse"),
            ("missing_field", "iot", "parse"), ("invalid_timestamp", "iot", "parse"),
            ("schema_violation", "weblog", "parse"), ("unparseable_line", "weblog", "edge.logs"),
            ("too_late", "iot", "window"),
        ]),
        label="CheckDeadLetters",
    )  # fmt: skip
    result = pipeline.run()
    result.wait_until_finish()
    # AND every stage reported what it received, emitted and dead-lettered
    counters = query_counters(result)
    assert {k: v for k, v in counters.items() if k.startswith(("parse.", "window."))} == {
        "parse.received": len(sent_a) + len(sent_b),
        "parse.emitted": len(sent_a) + len(sent_b) - 6,
        "parse.dead_lettered.invalid_json": 1,
        "parse.dead_lettered.invalid_encoding": 1,
        "parse.dead_lettered.missing_field": 1,
        "parse.dead_lettered.invalid_timestamp": 1,
        "parse.dead_lettered.schema_violation": 1,
        "parse.dead_lettered.unparseable_line": 1,
        "window.dead_lettered.too_late": 1,
        "window.emitted": len(expect(sent_a).iot_windows)
        + len(expect(sent_a).web_windows)
        + len(expect(sent_b).iot_windows)
        + len(expect(sent_b).web_windows),
    }
    assert counters["enrich.received"] == counters["enrich.emitted"] == 7
    assert counters["filter.dropped.health_checks"] == 1


# Event time ----------------------------------------------------------------------------------------

# Shard A: on-time data of W0, then (arriving at the last moment W0 still accepts) late data of W0
# and on-time data of W10. Shard B, one second later: data of W0 that is now too late, a feed item
# a month old, and on-time data of W10.
SENT_A1 = [
    reading("d1", T0 + timedelta(seconds=5), 1, temperature=20.0),
    reading("d1", T0 + timedelta(seconds=15), 2, temperature=22.0),
    reading("d2", T0 + timedelta(seconds=25), 3, temperature=30.0),
    request(T0 + timedelta(seconds=10), GB, 1, bytes_sent=100),
    feed_item("quake-1", T0 - timedelta(days=3)),
]
SENT_A2 = [
    reading("d1", T0 + timedelta(seconds=30), 4, temperature=26.0),  # late, within lateness
    reading("d1", W10 + timedelta(seconds=5), 5, temperature=18.0),
    request(T0 + timedelta(seconds=40), SE, 2, bytes_sent=200),  # late, within lateness
]
SENT_B1 = [
    reading("d2", T0 + timedelta(seconds=35), 6, too_late=True, temperature=99.0),
    request(T0 + timedelta(seconds=45), US, 3, too_late=True),
    feed_item("quake-2", T0 - timedelta(days=30)),
    reading("d2", W10 + timedelta(seconds=20), 7, temperature=31.0),
]
A1 = source_batch(
    SHARD_A, SENT_A1, first_sequence=100, arrival=T0 + timedelta(seconds=50), previous=None
)
A2 = source_batch(SHARD_A, SENT_A2, first_sequence=105, arrival=CLOSES_W0, previous=104)
B1 = source_batch(
    SHARD_B, SENT_B1, first_sequence=900, arrival=CLOSES_W0 + timedelta(seconds=1), previous=None
)


def watermark_follows_arrival() -> BeamTestStream:
    """The ideal live run: the watermark is each batch's arrival time."""
    stream = BeamTestStream()
    for batch in (A1, A2, B1):
        stream = stream.advance_watermark_to(Timestamp.of(batch.max_arrival)).add_elements(
            [_at(batch)]
        )
        stream = stream.advance_processing_time(60)
    return stream.advance_watermark_to_infinity()


def watermark_far_ahead() -> BeamTestStream:
    """Every batch is behind the watermark by more than the lateness: an event-time Beam window with
    ``allowed_lateness=600`` would drop all of W0's data (what a restarted job restored at a late
    watermark, or a shard racing ahead of the others, would do)."""
    stream = BeamTestStream().advance_watermark_to(
        Timestamp.of((T0 + timedelta(hours=2)).timestamp())
    )
    for batch in (A1, A2, B1):
        stream = stream.add_elements([_at(batch)]).advance_processing_time(600)
    return stream.advance_watermark_to_infinity()


def watermark_held_back() -> BeamTestStream:
    """The watermark never moves until the end (a shard never polled, a backlog after downtime):
    a watermark-driven window would still be open and would accept even the too-late data."""
    stream = BeamTestStream()
    for batch in (A1, A2, B1):
        stream = stream.add_elements([_at(batch)]).advance_processing_time(1)
    return stream.advance_watermark_to_infinity()


@pytest.mark.parametrize(
    "script", [watermark_follows_arrival, watermark_far_ahead, watermark_held_back]
)
def test_lateness_is_decided_by_arrival_time_whatever_the_watermark(
    script: Callable[[], BeamTestStream], geoip: tuple[str, str]
) -> None:
    # GIVEN on-time, late-but-within-lateness and too-late events, arriving under a watermark history
    # WHEN the stages run under TestStream
    options = PipelineOptions(flags=[], streaming=True)
    with BeamTestPipeline(runner=DIRECT_RUNNER, options=options) as pipeline:
        out = stages(pipeline | script(), geoip)
        summaries = out | "Summarize" >> beam.ParDo(_Summarize())
        # THEN whatever the watermark did, the decisions are the arrival-time ones:
        # - on time (A1): its events and W0 partials;
        # - late within lateness (A2, arriving exactly when W0 closes): its events are kept and it
        #   carries a W0 partial, which the writer merges into the stored W0 row (next test);
        # - too late (B1, one second later): a `too_late` dead letter, never dropped silently, and
        #   no W0 partial; the month-old feed item is kept (feeds are never too late);
        # and each batch keeps its arrival time as element timestamp.
        assert_that(
            summaries,
            equal_to([
                expected_summary(A1, SENT_A1),
                expected_summary(A2, SENT_A2),
                expected_summary(B1, SENT_B1),
            ]),
        )  # fmt: skip
    assert expect(SENT_A2).iot_windows == {
        ("d1", "temperature", W0): (1, 26.0, 26.0, 26.0),
        ("d1", "temperature", W10): (1, 18.0, 18.0, 18.0),
    }
    assert expect(SENT_B1).dead_letters == {"too_late": 2}
    assert expect(SENT_B1).iot_windows == {("d2", "temperature", W10): (1, 31.0, 31.0, 31.0)}


def test_an_idle_shard_holds_nothing_back_and_late_data_updates_its_stored_window(
    geoip: tuple[str, str], tmp_path: Path
) -> None:
    # GIVEN shard B sends one batch and then nothing, while shard A goes on over three bundles
    # (one TestStream event each), the last one late data of W0 and data of W10; the watermark is
    # held at shard B's last arrival for the whole run, as if the idle shard held it back
    b_only = [reading("d9", T0 + timedelta(seconds=2), 9, temperature=5.0)]
    b1 = source_batch(
        SHARD_B, b_only, first_sequence=900, arrival=T0 + timedelta(seconds=20), previous=None
    )
    a3_sent = [
        reading("d1", W10 + timedelta(seconds=40), 8, temperature=19.0),
        reading("d1", T0 + timedelta(seconds=50), 9, temperature=21.0),  # late, within lateness
    ]
    a3 = source_batch(
        SHARD_A,
        a3_sent,
        first_sequence=108,
        arrival=CLOSES_W0 - timedelta(seconds=5),
        previous=107,
    )
    a2 = source_batch(
        SHARD_A,
        SENT_A2,
        first_sequence=105,
        arrival=CLOSES_W0 - timedelta(seconds=10),
        previous=104,
    )
    stream = (
        BeamTestStream()
        .advance_watermark_to(Timestamp.of(b1.max_arrival))
        .add_elements([_at(b1), _at(A1)])
        .advance_processing_time(30)
        .add_elements([_at(a2)])
        .advance_processing_time(30)
        .add_elements([_at(a3)])
        .advance_processing_time(30)
        .advance_watermark_to_infinity()
    )
    warehouse = WarehouseSettings(state_dir=tmp_path / "state")

    # WHEN the stages and the writer run
    options = PipelineOptions(flags=[], streaming=True)
    with BeamTestPipeline(runner=DIRECT_RUNNER, options=options) as pipeline:
        _ = stages(pipeline | stream, geoip) | "WriteToIceberg" >> WriteToIceberg(
            warehouse, WINDOW_SECONDS
        )

    # THEN every bundle was committed on its own, shard A's position moving on while the idle
    # shard B keeps the position of its one batch (dropping it would make a restart re-read B)
    table = open_catalog(warehouse).load_table("sluice.iot_readings")
    history = [
        snapshot.summary.additional_properties["sluice.positions"]
        for snapshot in table.metadata.snapshots
        if snapshot.summary is not None
    ]
    assert history == [
        f'{{"{SHARD_A}": "104", "{SHARD_B}": "900"}}',
        f'{{"{SHARD_A}": "107", "{SHARD_B}": "900"}}',
        f'{{"{SHARD_A}": "109", "{SHARD_B}": "900"}}',
    ]
    committed = {SHARD_A: "109", SHARD_B: "900"}
    assert committed_positions(tmp_path / "state") == {table: committed for table in TABLE_NAMES}
    # AND the tables hold everything once; W0's row was updated in place by the late data of the
    # second and third bundles (one row, the merged values)
    everything = b_only + SENT_A1 + SENT_A2 + a3_sent
    tables = read_tables(tmp_path / "state")
    assert (
        Counter(r["event_id"] for r in tables["iot_readings"])
        == expect(everything).event_ids["iot_readings"]
    )
    assert iot_window_values(tables["iot_metrics_1m"]) == expect(everything).iot_windows
    assert iot_window_values(tables["iot_metrics_1m"])[("d1", "temperature", W0)] == (
        4,
        20.0 + 22.0 + 26.0 + 21.0,
        20.0,
        26.0,
    )
    # AND a restarted job resumes both shards right after what was committed
    writer = ExactlyOnceWriter(ensure_tables(open_catalog(warehouse), warehouse), WINDOW_SECONDS)
    assert writer.resume_positions() == {SHARD_A: 109, SHARD_B: 900}
