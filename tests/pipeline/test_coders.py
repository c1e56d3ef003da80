"""The job's element coders (``beam_jobs.coders``): exact round trips without pickle, and the job's
collections use them.

Runtime: about 2 s.
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from dataclasses import replace

import apache_beam as beam
import pytest
from apache_beam.coders.typecoders import registry
from test_stage_values import SHARD, mixed_batch, snapshot

from beam_jobs.coders import JobBatchCoder, SourceBatchCoder
from beam_jobs.pipeline import ParseAndValidate, source_records
from devkit.geoip_build import build_demo_databases
from sluice.core.contracts import IotReading, Source
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


@pytest.fixture(scope="module")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    city, asn = build_demo_databases(tmp_path_factory.mktemp("geoip"))
    return str(city), str(asn)


def test_a_source_batch_round_trips_exactly_and_is_not_pickled() -> None:
    batch = mixed_batch()
    batch = replace(batch, records=(*batch.records, batch.records[0]._replace(partition_key="k\ud800",
                                                                        data=b"\xff\x00")))  # fmt: skip
    coder = SourceBatchCoder()
    data = coder.encode(batch)
    assert data[:1] == b"\x01" and b"SourceBatch" not in data
    assert coder.decode(data) == batch
    empty = replace(batch, records=())
    assert coder.decode(coder.encode(empty)) == empty


def test_job_batches_of_every_stage_round_trip_exactly(geoip: tuple[str, str]) -> None:
    decoded = decode_batch(SHARD, source_records(mixed_batch()), previous_sequence=7)
    filters = {s: RecordFilter(DEFAULT_RULES, s.value) for s in Source}
    with GeoIpEnricher(*geoip) as enricher:
        enriched = enrich_batch(decoded, enricher)
    windowed = window_batch(filter_batch(enriched, filters), 60, 600)
    coder = JobBatchCoder()
    for batch in (decoded, enriched, windowed, JobBatch("s", -1, -1, None, 0.0)):
        data = coder.encode(batch)
        assert data[:1] == b"\x01" and b"pydantic" not in data
        assert snapshot(coder.decode(data)) == snapshot(batch)
    assert windowed.iot_windows and windowed.web_windows and windowed.dead_letters


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_record_json_cannot_carry_still_travels() -> None:
    # A record built without its contract (NaN is refused by the contracts, JSON has no NaN)
    decoded = decode_batch(SHARD, source_records(mixed_batch()))
    odd = IotReading.model_construct(**{**decoded.events[Source.IOT][0].record.__dict__,
                                        "metrics": {"t": float("nan")}})  # fmt: skip
    batch = replace(decoded, events={**decoded.events, Source.IOT: (
        decoded.events[Source.IOT][0].with_record(odd),)})  # fmt: skip
    coder = JobBatchCoder()
    again = coder.decode(coder.encode(batch))
    assert str(again.events[Source.IOT][0].record.metrics["t"]) == "nan"


def test_the_job_collections_use_these_coders() -> None:
    assert isinstance(registry.get_coder(SourceBatch), SourceBatchCoder)
    assert isinstance(registry.get_coder(JobBatch), JobBatchCoder)
    pipeline = beam.Pipeline()
    parsed = pipeline | beam.Create([mixed_batch()]) | ParseAndValidate()
    assert isinstance(registry.get_coder(parsed.element_type), JobBatchCoder)
    # Beam's size estimate of a batch does not encode it
    batch = decode_batch(SHARD, source_records(mixed_batch()))
    impl = JobBatchCoder().get_impl()
    assert impl.estimate_size(batch) > 0


def test_correlation_ids_travel_with_their_events() -> None:
    decoded = decode_batch(SHARD, source_records(mixed_batch()), previous_sequence=7)
    events = {
        source: tuple(e._replace(correlation_id=f"req-{i}") for i, e in enumerate(found))
        for source, found in decoded.events.items()
    }
    batch = replace(decoded, events=events)
    back = JobBatchCoder().decode(JobBatchCoder().encode(batch))
    assert any(back.events.values())
    assert {s: [e.correlation_id for e in v] for s, v in back.events.items()} == {
        s: [f"req-{i}" for i in range(len(v))] for s, v in events.items()
    }
