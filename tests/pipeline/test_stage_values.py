"""Stages are values: no stage changes the batch it is given, and two branches off one stage see
the same data (Beam forbids changing an element; a second consumer of a collection must see what
the first saw).

Runtime: about 3 s (one small pipeline on the FnApiRunner, GeoIP demo databases built once).
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call,no-any-return"

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from job_testkit import (
    BOT_AGENT,
    CLIENTS,
    HEALTH_CHECK_PATH,
    LATENESS_SECONDS,
    WINDOW_SECONDS,
    edge_dead_letter,
    feed_item,
    invalid_records,
    reading,
    request,
    source_batch,
)
from kinesis_testkit import TEST_RUNNER

from beam_jobs.pipeline import (
    ApplyFilters,
    EnrichWithGeoIp,
    ParseAndValidate,
    WindowAndAggregate,
    source_records,
)
from devkit.geoip_build import build_demo_databases
from sluice.core.config import load_settings
from sluice.core.contracts import Source
from sluice.stream.kinesis.records import SourceBatch
from sluice.stream.stages import (
    JobBatch,
    decode_batch,
    enrich_batch,
    filter_batch,
    window_batch,
)
from sluice.transform.filters import DEFAULT_RULES, RecordFilter
from sluice.transform.geoip import GeoIpEnricher

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHARD = "shardId-000000000000"
GB, US = (next(c for c in CLIENTS if c[1] == iso) for iso in ("GB", "US"))


@pytest.fixture(scope="module")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    city, asn = build_demo_databases(tmp_path_factory.mktemp("geoip"))
    return str(city), str(asn)


def mixed_batch() -> SourceBatch:
    """A batch every stage changes something of: GeoIP, a dropped health check, a flagged bot,
    decoding failures, an edge dead letter and a reading that arrives after its window closed."""
    sent = [
        reading("d1", T0 + timedelta(seconds=5), 1, temperature=20.0, humidity=40.5),
        reading("d2", T0 + timedelta(seconds=25), 2, temperature=30.0),
        request(T0 + timedelta(seconds=10), GB, 1, bytes_sent=100),
        request(T0 + timedelta(seconds=14), US, 2, path="/about", agent=BOT_AGENT, bytes_sent=11),
        request(T0 + timedelta(seconds=15), US, 3, path=HEALTH_CHECK_PATH),
        feed_item("quake-1", T0 - timedelta(days=3)),
        edge_dead_letter(1, T0),
        *invalid_records(1, T0),
        reading("d3", T0 - timedelta(minutes=30), 3, too_late=True, temperature=1.0),
    ]
    return source_batch(SHARD, sent, first_sequence=100, arrival=T0 + timedelta(seconds=50),
                        previous=None)  # fmt: skip


def snapshot(batch: JobBatch) -> Any:
    """Everything a batch holds, down to the records' fields and the window sketches' bytes."""
    return (
        batch.shard_id, batch.first_sequence, batch.last_sequence, batch.previous_sequence,
        batch.max_arrival, batch.redriven,
        {s: [(e.sequence, e.sub_sequence, e.arrival, e.event_id, e.ingest_time, e.redrive_of,
              e.record.model_dump(mode="json")) for e in events]
         for s, events in batch.events.items()},
        [(e.event_id, e.record.model_dump(mode="json")) for e in batch.dead_letters],
        {k: v.to_bytes() for k, v in batch.iot_windows.items()},
        {k: v.to_bytes() for k, v in batch.web_windows.items()},
        {s: dict(c) for s, c in batch.stage_counters.items()},
    )  # fmt: skip


def test_no_stage_changes_the_batch_it_is_given(geoip: tuple[str, str]) -> None:
    # GIVEN a decoded batch that every later stage has something to change in
    records = source_records(mixed_batch())
    decoded = decode_batch(SHARD, records)
    filters = {s: RecordFilter(DEFAULT_RULES, s.value) for s in Source}
    enricher = GeoIpEnricher(*geoip)
    try:
        # WHEN each stage runs on the previous one's result, snapshotted before and after
        before = snapshot(decoded)
        enriched = enrich_batch(decoded, enricher)
        assert snapshot(decoded) == before
        before = snapshot(enriched)
        filtered = filter_batch(enriched, filters)
        assert snapshot(enriched) == before
        before = snapshot(filtered)
        windowed = window_batch(filtered, WINDOW_SECONDS, LATENESS_SECONDS)
        assert snapshot(filtered) == before
    finally:
        enricher.close()
    # THEN each stage did change something in its own result (so the checks above could fail)
    assert decoded.events[Source.WEBLOG][0].record.geo is None
    assert enriched.events[Source.WEBLOG][0].record.geo is not None
    assert len(filtered.events[Source.WEBLOG]) == len(enriched.events[Source.WEBLOG]) - 1
    assert any("bot" in e.record.flags for e in filtered.events[Source.WEBLOG])
    assert not any("bot" in e.record.flags for e in enriched.events[Source.WEBLOG])
    assert len(windowed.dead_letters) == len(filtered.dead_letters) + 1  # the late reading
    assert windowed.iot_windows and not filtered.iot_windows
    # AND each stage's counters ride along under its own name, those before it untouched
    assert set(windowed.stage_counters) == {"parse", "enrich", "filter", "window"}
    assert windowed.stage_counters["parse"] == decoded.stage_counters["parse"]
    assert windowed.counters["dead_lettered.too_late"] == 1


class _Shape(beam.DoFn):
    """What one branch saw of a parsed batch."""

    def process(self, batch: JobBatch) -> Any:
        yield (
            {s.value: sorted(e.event_id for e in es) for s, es in batch.events.items()},
            sorted(d.event_id for d in batch.dead_letters),
            sorted(batch.iot_windows),
        )


def shape(batch: JobBatch) -> Any:
    return next(iter(_Shape().process(batch)))


def test_two_branches_off_one_stage_see_the_same_data(
    geoip: tuple[str, str], tmp_path: Path
) -> None:
    # GIVEN the parse stage's output consumed by two branches: the rest of the job's stages, and
    # an observer of the parsed batches
    batch = mixed_batch()
    parsed = decode_batch(SHARD, source_records(batch))
    settings = load_settings(filter_rules=DEFAULT_RULES)
    pipeline = BeamTestPipeline(runner=TEST_RUNNER, options=PipelineOptions(flags=[]))
    out = pipeline | beam.Create([batch]) | "ParseAndValidate" >> ParseAndValidate()
    rest = (
        out
        | "EnrichWithGeoIp" >> EnrichWithGeoIp(*geoip)
        | "ApplyFilters" >> ApplyFilters(settings)
        | "WindowAndAggregate" >> WindowAndAggregate(WINDOW_SECONDS, LATENESS_SECONDS)
    )
    seen_by_observer = out | "Observe" >> beam.ParDo(_Shape())
    seen_at_the_end = rest | "ObserveEnd" >> beam.ParDo(_Shape())
    # THEN the observer sees the parsed batch as the parse stage made it, whatever the other branch
    # did to its copy (filtered, enriched, late events diverted), and the other branch sees the
    # stages' result
    filters = {s: RecordFilter(settings.filter_rules, s.value) for s in Source}
    with GeoIpEnricher(*geoip) as enricher:
        end = window_batch(filter_batch(enrich_batch(parsed, enricher), filters),
                           WINDOW_SECONDS, LATENESS_SECONDS)  # fmt: skip
    assert shape(parsed) != shape(end)
    assert_that(seen_by_observer, equal_to([shape(parsed)]), label="CheckObserver")
    assert_that(seen_at_the_end, equal_to([shape(end)]), label="CheckEnd")
    pipeline.run().wait_until_finish()
