"""ReadFromKinesis: its restriction tracker and settings, and pipeline tests against a moto server over HTTP.

The pipeline tests make real boto3 calls to the session's moto server (``aws_env``), run Beam's
FnApiRunner in streaming mode (what Beam 2.77's DirectRunner runs when Prism cannot be downloaded)
and end through ``stop_when_idle_seconds``. Helpers are in ``kinesis_testkit``. The engine-free
rules, and the reader over a fake client, are tested in ``test_kinesis_reader``.
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import itertools
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import boto3
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from kinesis_testkit import (
    TEST_RUNNER,
    ReadFaultProxy,
    arrival_times,
    background,
    create_stream,
    every_shard_call_gap,
    merge_shards_like_kinesis,
    put_aggregated,
    put_records,
    run_read,
    shard_hash_key,
    split_shard_like_kinesis,
)

from beam_jobs.kinesis_client import BOTOCORE_ERRORS
from beam_jobs.metrics import StageCounters, query_counters
from beam_jobs.read_kinesis import ReadFromKinesis, StreamRestrictionTracker
from sluice.core.contracts import Stage
from sluice.core.errors import ConfigError
from sluice.stream.kinesis.failures import KinesisReadError
from sluice.stream.kinesis.positions import (
    STOP_READING,
    ShardClaim,
    StartPosition,
    StreamRestriction,
)
from sluice.stream.kinesis.reader import KinesisStreamReader
from sluice.stream.kinesis.records import SourceBatch
from sluice.stream.kpl import UserRecord

SHARD_0 = "shardId-000000000000"
SHARD_1 = "shardId-000000000001"
FAST: dict[str, Any] = {
    # Short waits keep each pipeline test to a few seconds; the rules are the same.
    "stop_when_idle_seconds": 1.0,
    "backoff_base_seconds": 0.01,
    "backoff_cap_seconds": 0.05,
    "discovery_interval_seconds": 1.0,
}


# Fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def kinesis(aws_env: str) -> Any:
    """A client talking to moto directly (never through a fault proxy)."""
    return boto3.client("kinesis", endpoint_url=aws_env)


@pytest.fixture
def stream(kinesis: Any) -> str:
    return create_stream(kinesis, shard_count=2)


@pytest.fixture
def read_proxy(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadFaultProxy]:
    """The pipeline's client goes through this proxy (it takes AWS_ENDPOINT_URL); tests' clients do not."""
    proxy = ReadFaultProxy(aws_env)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()


def assert_chained_in_order(batches: list[SourceBatch]) -> None:
    """Per shard: each batch continues the previous one, and records are in sequence order."""
    by_shard: dict[str, list[SourceBatch]] = {}
    for batch in batches:
        by_shard.setdefault(batch.shard_id, []).append(batch)
    for shard, shard_batches in by_shard.items():
        assert shard_batches[0].previous_sequence is None, shard
        for before, after in itertools.pairwise(shard_batches):
            assert after.previous_sequence == before.last_sequence, shard
        positions = [
            (int(r.sequence_number), r.sub_sequence) for b in shard_batches for r in b.records
        ]
        assert positions == sorted(positions) and len(set(positions)) == len(positions), shard
        for batch in shard_batches:
            assert batch.first_sequence == batch.records[0].sequence_number
            assert batch.last_sequence == batch.records[-1].sequence_number
            assert batch.max_arrival == max(r.arrival for r in batch.records)


# Unit: restriction and tracker ---------------------------------------------------------------------


def test_tracker_claims_move_positions_forward_and_finish_shards() -> None:
    # GIVEN a tracker over a restriction that already read shard 0 up to 5
    tracker = StreamRestrictionTracker(StreamRestriction(positions=((SHARD_0, "5"),)))
    # WHEN batches of both shards are claimed and shard 1 is found at its end
    assert tracker.try_claim(ShardClaim(SHARD_0, "9"))
    assert tracker.try_claim(ShardClaim(SHARD_1, "3", finished=True))
    # THEN the restriction holds the new positions and the finished shard
    current = tracker.current_restriction()
    assert current.position_map() == {SHARD_0: "9", SHARD_1: "3"}
    assert current.finished == {SHARD_1}
    # AND a claim that does not move forward, or on a finished shard, is a reader bug
    with pytest.raises(ValueError, match="not after"):
        tracker.try_claim(ShardClaim(SHARD_0, "9"))
    with pytest.raises(ValueError, match="already read to its end"):
        tracker.try_claim(ShardClaim(SHARD_1, None, finished=True))


def test_tracker_checkpoint_splits_done_work_from_the_rest() -> None:
    # GIVEN a tracker that claimed one batch
    tracker = StreamRestrictionTracker(StreamRestriction(start_timestamp=12.5))
    tracker.try_claim(ShardClaim(SHARD_0, "7"))
    # WHEN the runner asks for a parallel split, then for a checkpoint (fraction 0)
    declined = tracker.try_split(0.5)
    split = tracker.try_split(0.0)
    # THEN only the checkpoint happens: the residual resumes after sequence 7, the primary is done
    assert declined is None
    assert split is not None
    primary, residual = split
    assert primary.stopped and not residual.stopped
    assert residual == StreamRestriction(positions=((SHARD_0, "7"),), start_timestamp=12.5)
    # AND the rest of this process call can claim nothing, and the tracker counts as done
    assert not tracker.try_claim(ShardClaim(SHARD_0, "8"))
    tracker.check_done()
    assert tracker.is_bounded()
    assert tracker.try_split(0.0) is None


def test_tracker_is_done_only_when_stopped() -> None:
    # GIVEN a tracker whose process call neither deferred nor finished
    tracker = StreamRestrictionTracker(StreamRestriction())
    # THEN check_done fails loudly (a process() that returns too early would stop the stream)
    with pytest.raises(ValueError, match="not done"):
        tracker.check_done()
    assert not tracker.is_bounded()
    # WHEN the end is claimed (stop-when-idle) THEN it is done and claims nothing more
    assert tracker.try_claim(STOP_READING)
    tracker.check_done()
    assert not tracker.try_claim(ShardClaim(SHARD_0, "1"))


def test_restriction_survives_beams_restriction_coder() -> None:
    # GIVEN the coder Beam uses for the DoFn's restrictions (none registered: the default)
    coder = ReadFromKinesis(stream_name="s").restriction_coder()
    restriction = StreamRestriction(
        positions=((SHARD_0, "49590338271490256608559692538361571095921575989136588898"),),
        finished=frozenset({"shardId-000000000009"}),
        start_timestamp=1_700_000_000.25,
    )
    # WHEN it is encoded and decoded, as on every checkpoint
    # THEN it comes back equal (it is a picklable frozen dataclass)
    assert coder.decode(coder.encode(restriction)) == restriction
    assert pickle.loads(pickle.dumps(restriction)) == restriction


# Unit: settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"stream_name": ""},
        {"stream_name": "s", "max_records_per_call": 10_001},
        {"stream_name": "s", "stop_when_idle_seconds": 0},
        {"stream_name": "s", "unknown_setting": 1},
        {"stream_name": "s", "start": {"kind": "AT_TIMESTAMP"}},
        {"stream_name": "s", "start": {"kind": "LATEST", "timestamp": "2026-01-01T00:00:00Z"}},
        {"stream_name": "s", "start": {"after_sequence": {"s0": "12ab"}}},
    ],
)
def test_invalid_settings_fail_at_construction(arguments: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="ReadFromKinesis"):
        ReadFromKinesis(**arguments)


# Unit: metrics -------------------------------------------------------------------------------------


class _CountWords(beam.DoFn):
    def setup(self) -> None:
        self.counters = StageCounters(Stage.PARSE)

    def process(self, line: str) -> Iterator[str]:
        self.counters.received()
        if not line:
            self.counters.dead_lettered("invalid json")
        elif line.startswith("#"):
            self.counters.filtered("comments")
        else:
            self.counters.emitted()
            yield line


def test_stage_counters_share_one_naming_scheme() -> None:
    # GIVEN a stage that counts what it receives, emits, filters and dead-letters
    pipeline = beam.Pipeline(options=PipelineOptions(flags=[], runner=TEST_RUNNER))
    _ = pipeline | beam.Create(["a", "", "#x", "b"]) | beam.ParDo(_CountWords())
    # WHEN it runs
    result = pipeline.run()
    result.wait_until_finish()
    # THEN its counters read back as <stage>.<what>, with unsafe label characters replaced
    assert query_counters(result) == {
        "parse.received": 4,
        "parse.emitted": 2,
        "parse.filtered.comments": 1,
        "parse.dead_lettered.invalid_json": 1,
    }
    # AND names chosen in code must follow the scheme
    with pytest.raises(ValueError):
        StageCounters("Parse Stage")
    with pytest.raises(ValueError):
        StageCounters(Stage.READ).count("records per second")


# The reader driven by the tracker: a checkpoint in the middle of a round --------------------------


def test_a_batch_whose_claim_fails_is_read_again_after_the_checkpoint(
    kinesis: Any, stream: str
) -> None:
    # GIVEN 40 records, read 5 Kinesis records per call by a reader driven as Beam would drive it
    entries = [(f"k{i}", b"r-%02d" % i) for i in range(40)]
    put_records(kinesis, stream, entries)
    settings = ReadFromKinesis(stream_name=stream, max_records_per_call=5, **FAST).settings
    reader = KinesisStreamReader(kinesis, settings, errors=BOTOCORE_ERRORS)
    tracker = StreamRestrictionTracker(StreamRestriction())
    residual: list[StreamRestriction] = []

    def claim_then_checkpoint(shard_claim: ShardClaim) -> bool:
        claimed: bool = tracker.try_claim(shard_claim)
        if claimed and not residual:
            split = tracker.try_split(0.0)  # the runner checkpoints right after the first claim
            assert split is not None
            residual.append(split[1])
        return claimed

    # WHEN the runner checkpoints after the first batch of a round, so the second shard's claim fails
    first_round = list(reader.read_round(tracker.current_restriction(), claim_then_checkpoint))
    batches = list(first_round)
    restriction = residual[0]
    rounds = 0
    while sum(len(b.records) for b in batches) < 40 and rounds < 60:
        # then reading resumes from the checkpoint, round after round, as after a restore
        tracker = StreamRestrictionTracker(restriction)
        batches.extend(reader.read_round(restriction, tracker.try_claim))
        restriction, rounds = tracker.current_restriction(), rounds + 1
    # THEN the first round yielded only the claimed batch, and nothing is lost or read twice
    assert len(first_round) == 1
    assert Counter(r.data for b in batches for r in b.records) == Counter(d for _, d in entries)
    assert_chained_in_order(batches)


# Pipeline: what comes out --------------------------------------------------------------------------


def test_plain_and_aggregated_records_come_out_once_in_shard_order(
    kinesis: Any, stream: str
) -> None:
    # GIVEN 200 plain records over 20 keys and 5 KPL aggregates of 40 user records each
    plain = [(f"key-{i % 20}", b"plain-%04d" % i) for i in range(200)]
    users = [UserRecord(f"agg-{i % 40}", b"agg-%04d" % i) for i in range(200)]
    t0 = time.time()
    put_records(kinesis, stream, plain)
    put_aggregated(kinesis, stream, users, per_aggregate=40)
    t1 = time.time()
    # WHEN the stream is read from its start, at most 50 Kinesis records per call
    run = run_read(stream_name=stream, start=StartPosition(), max_records_per_call=50, **FAST)
    # THEN every user record comes out exactly once, with its own partition key
    expected = {data: key for key, data in plain} | {u.data: u.partition_key for u in users}
    assert Counter(run.data()) == Counter(list(expected))
    assert all(r.partition_key == expected[r.data] for r in run.records())
    # AND in sequence order per shard, batch after batch, each naming the one before it
    assert_chained_in_order(run.batches)
    assert len(run.batches) >= 5  # several calls per shard, so the chains are exercised
    assert all(len({r.sequence_number for r in b.records}) <= 50 for b in run.batches)
    # AND aggregated records keep their index within the aggregate; plain records have 0
    for record in run.records():
        if record.data.startswith(b"agg-"):
            assert record.sub_sequence == int(record.data[4:]) % 40
        else:
            assert record.sub_sequence == 0
    # AND arrival times are Kinesis' ApproximateArrivalTimestamp
    arrivals = arrival_times(kinesis, stream)
    for batch in run.batches:
        for record in batch.records:
            assert record.arrival == arrivals[(batch.shard_id, record.sequence_number)]
            assert t0 - 1 <= record.arrival <= t1 + 1
    # AND the counters agree with what came out
    assert run.counters["read.records"] == 400
    assert run.counters["read.kinesis_records"] == 205
    assert run.counters["read.batches"] == len(run.batches)


def test_latest_reads_only_records_that_arrive_after_the_reader_starts(
    kinesis: Any, stream: str, read_proxy: ReadFaultProxy
) -> None:
    # GIVEN records already in the stream
    put_records(kinesis, stream, [(f"k{i}", b"old-%d" % i) for i in range(20)])
    new = [(f"k{i}", b"new-%d" % i) for i in range(20)]

    def put_new_once_the_reader_polls() -> None:
        read_proxy.wait_for_get_records(shards=2)
        put_records(kinesis, stream, new)

    # WHEN a LATEST reader runs, and records arrive after its first poll of each shard
    join = background(put_new_once_the_reader_polls)
    run = run_read(stream_name=stream, start=StartPosition(kind="LATEST"), **FAST)
    join()
    # THEN only the new records come out, once each
    assert sorted(run.data()) == sorted(data for _, data in new)
    assert_chained_in_order(run.batches)


def test_at_timestamp_reads_records_from_that_arrival_time(kinesis: Any, stream: str) -> None:
    # GIVEN records before and after a moment
    put_records(kinesis, stream, [(f"k{i}", b"before-%d" % i) for i in range(20)])
    time.sleep(0.2)
    moment = datetime.now(UTC)
    time.sleep(0.2)
    after = [(f"k{i}", b"after-%d" % i) for i in range(20)]
    put_records(kinesis, stream, after)
    # WHEN read AT_TIMESTAMP that moment
    run = run_read(
        stream_name=stream, start=StartPosition(kind="AT_TIMESTAMP", timestamp=moment), **FAST
    )
    # THEN exactly the later records come out
    assert sorted(run.data()) == sorted(data for _, data in after)


def test_saved_positions_resume_right_after_the_saved_sequence(kinesis: Any, stream: str) -> None:
    # GIVEN 60 records over two shards, and a saved position in the middle of shard 0
    entries = [(f"k{i}", b"r-%02d" % i) for i in range(60)]
    landed = put_records(kinesis, stream, entries)
    on_shard_0 = [
        (put, data)
        for put, (_, data) in zip(landed, entries, strict=True)
        if put.shard_id == SHARD_0
    ]
    saved = on_shard_0[len(on_shard_0) // 2][0].sequence_number
    # WHEN read from TRIM_HORIZON with shard 0 resuming after the saved sequence
    run = run_read(stream_name=stream, start=StartPosition(after_sequence={SHARD_0: saved}), **FAST)
    # THEN shard 0 yields exactly the records after it (nothing re-read, nothing missed)
    shard_0 = [r.data for b in run.by_shard()[SHARD_0] for r in b.records]
    assert shard_0 == [data for put, data in on_shard_0 if int(put.sequence_number) > int(saved)]
    # AND shard 1, without a saved position, is read from its start
    shard_1 = [r.data for b in run.by_shard()[SHARD_1] for r in b.records]
    assert shard_1 == [
        data for put, (_, data) in zip(landed, entries, strict=True) if put.shard_id == SHARD_1
    ]
    # AND the first batch of this run starts a new chain
    assert_chained_in_order(run.batches)


def test_saved_positions_after_a_split_skip_the_parent_and_read_new_siblings(
    kinesis: Any, stream: str
) -> None:
    # GIVEN shard 0 split into two children after records went to all shards
    put_records(kinesis, stream, [(f"k{i}", b"parent-%02d" % i) for i in range(40)])
    low, high = split_shard_like_kinesis(stream, SHARD_0)
    entries = [(f"k{i}", b"child-%02d" % i) for i in range(60)]
    landed = put_records(kinesis, stream, entries)
    in_low = [data for put, (_, data) in zip(landed, entries, strict=True) if put.shard_id == low]
    in_high = [data for put, (_, data) in zip(landed, entries, strict=True) if put.shard_id == high]
    first_in_low = next(p for p in landed if p.shard_id == low).sequence_number
    assert in_low and in_high
    # WHEN a LATEST reader resumes with a saved position for only the low child
    run = run_read(
        stream_name=stream,
        start=StartPosition(kind="LATEST", after_sequence={low: first_in_low}),
        **FAST,
    )
    # THEN the parent (read to its end before its child was) is not read again
    assert not any(d.startswith(b"parent") for d in run.data())
    # AND the low child resumes after its saved record; its sibling, whose parent was read, from its start
    by_shard = run.by_shard()
    assert [r.data for b in by_shard[low] for r in b.records] == in_low[1:]
    assert [r.data for b in by_shard[high] for r in b.records] == in_high
    # AND shard 1, unrelated and without a position, starts at LATEST: nothing old
    assert SHARD_1 not in by_shard


# Pipeline: resharding ------------------------------------------------------------------------------


def _assert_per_key_order(data: list[bytes]) -> None:
    """Records are b"<key>:<n>" with n counting up per key in put order; output keeps that order."""
    seen: dict[bytes, list[int]] = {}
    for item in data:
        key, n = item.split(b":")
        seen.setdefault(key, []).append(int(n))
    for key, numbers in seen.items():
        assert numbers == sorted(numbers), key


def test_resharded_stream_is_read_parents_before_children(kinesis: Any, stream: str) -> None:
    # GIVEN records put before a split, between the split and a merge, and after the merge
    counter = Counter[str]()

    def batch_of(n: int) -> list[tuple[str, bytes]]:
        entries = []
        for i in range(n):
            key = f"k{i % 30}"
            counter[key] += 1
            entries.append((key, f"{key}:{counter[key]}".encode()))
        return entries

    put_records(kinesis, stream, batch_of(90))
    low, high = split_shard_like_kinesis(stream, SHARD_0)
    put_records(kinesis, stream, batch_of(90))
    merged = merge_shards_like_kinesis(stream, high, SHARD_1)
    put_records(kinesis, stream, batch_of(90))
    # WHEN the stream is read from its start
    run = run_read(stream_name=stream, start=StartPosition(), **FAST)
    # THEN every record comes out once, and every key's records in the order they were put
    assert len(run.data()) == 270 and len(set(run.data())) == 270
    _assert_per_key_order(run.data())
    # AND no child shard's first batch comes before the last batch of any of its parents
    last = {b.shard_id: i for i, b in enumerate(run.batches)}
    first: dict[str, int] = {}
    for i, batch in enumerate(run.batches):
        first.setdefault(batch.shard_id, i)
    assert set(last) == {SHARD_0, SHARD_1, low, high, merged}
    for child, parents in {low: [SHARD_0], high: [SHARD_0], merged: [high, SHARD_1]}.items():
        assert all(last[parent] < first[child] for parent in parents), child
    assert_chained_in_order(run.batches)


def test_resharding_while_reading_loses_and_repeats_nothing(kinesis: Any, stream: str) -> None:
    # GIVEN a producer that keeps putting while it splits one shard and merges two others
    counter = Counter[str]()
    put: list[bytes] = []

    def produce() -> None:
        for round_ in range(12):
            entries = []
            for i in range(30):
                key = f"k{i}"
                counter[key] += 1
                entries.append((key, f"{key}:{counter[key]}".encode()))
            put_records(kinesis, stream, entries)
            put.extend(data for _, data in entries)
            if round_ == 3:
                split_shard_like_kinesis(stream, SHARD_0)
            if round_ == 7:
                merge_shards_like_kinesis(stream, "shardId-000000000003", SHARD_1)
            time.sleep(0.1)

    # WHEN the stream is read from its start meanwhile
    join = background(produce)
    run = run_read(stream_name=stream, start=StartPosition(), **FAST)
    join()
    # THEN every record comes out exactly once, per key in put order
    assert Counter(run.data()) == Counter(put)
    _assert_per_key_order(run.data())
    assert_chained_in_order(run.batches)
    assert len(run.by_shard()) == 5


# Pipeline: faults, pacing, watermark, stopping -----------------------------------------------------


def test_throttling_server_errors_and_expired_iterators_are_retried_without_loss(
    kinesis: Any, stream: str, read_proxy: ReadFaultProxy
) -> None:
    # GIVEN records, and GetRecords calls that are throttled, fail with 500, or find their iterator expired
    entries = [(f"k{i}", b"r-%03d" % i) for i in range(200)]
    put_records(kinesis, stream, entries)
    read_proxy.fail_get_records("ProvisionedThroughputExceededException", times=5)
    read_proxy.fail_get_records("InternalFailure", times=2, status=500)
    read_proxy.fail_get_records("ExpiredIteratorException", times=1)
    # WHEN the stream is read
    run = run_read(stream_name=stream, start=StartPosition(), max_records_per_call=40, **FAST)
    # THEN every record comes out once, in order, and each fault was counted
    assert Counter(run.data()) == Counter(data for _, data in entries)
    assert_chained_in_order(run.batches)
    assert run.counters["read.throttled"] == 5
    assert run.counters["read.transient_errors"] == 2
    assert run.counters["read.iterators_expired"] == 1
    assert sum(call.fault is not None for call in read_proxy.get_records_calls) == 8


def test_persistent_throttling_fails_with_a_clear_error(
    stream: str, read_proxy: ReadFaultProxy
) -> None:
    # GIVEN every GetRecords call is throttled
    read_proxy.fail_get_records("ProvisionedThroughputExceededException", times=None)
    # WHEN read with two retries per shard
    # THEN the pipeline fails with the reader's error, naming the error and the retry limit
    with pytest.raises(KinesisReadError, match=r"failed 3 times in a row.*ProvisionedThroughput"):
        run_read(stream_name=stream, start=StartPosition(), **{**FAST, "max_retries": 2})
    calls = read_proxy.get_records_calls
    assert {call.shard_id for call in calls} <= {SHARD_0, SHARD_1}
    assert all(call.fault for call in calls)


def test_each_shard_is_polled_at_most_five_times_a_second(
    stream: str, read_proxy: ReadFaultProxy
) -> None:
    # GIVEN an empty stream, read until idle for 1.5 s, asking for a poll every 0.05 s
    run = run_read(
        stream_name=stream,
        start=StartPosition(),
        **{**FAST, "stop_when_idle_seconds": 1.5, "poll_interval_seconds": 0.05},
    )
    # THEN both shards were polled throughout at no more than 5 calls a second: the reader spaces
    # call starts 0.2 s apart; the proxy sees them with the jitter of threads sharing a GIL (up to
    # ~50 ms under a parallel test run), hence the slack. Without the 0.2 s floor: 20 calls a second.
    gaps = every_shard_call_gap(read_proxy.get_records_calls)
    assert set(gaps) == {SHARD_0, SHARD_1}
    for shard, shard_gaps in gaps.items():
        assert len(shard_gaps) >= 4, shard
        assert len(shard_gaps) / sum(shard_gaps) <= 5.5, (shard, shard_gaps)
        assert min(shard_gaps) >= 0.1, (shard, shard_gaps)
    assert run.batches == []


def test_an_idle_shard_does_not_hold_back_the_watermark(kinesis: Any, stream: str) -> None:
    # GIVEN records only ever go to shard 0; shard 1 stays empty
    put_records(
        kinesis,
        stream,
        [(f"k{i}", b"r-%d" % i) for i in range(50)],
        explicit_hash_key=shard_hash_key(kinesis, stream, SHARD_0),
    )
    last_arrival = max(arrival_times(kinesis, stream).values())
    # WHEN read until idle for longer than the watermark margin
    run = run_read(
        stream_name=stream,
        start=StartPosition(),
        **{**FAST, "stop_when_idle_seconds": 1.5, "watermark_margin_seconds": 0.5},
    )
    ended = time.time()
    # THEN the watermark passed the busy shard's last record: the empty shard, never giving a
    # record time, counted as "now minus the margin" once caught up (else no watermark at all)
    assert {b.shard_id for b in run.batches} == {SHARD_0}
    watermark = run.distributions["read.watermark_ms"]
    assert watermark.max >= last_arrival * 1000
    assert watermark.max <= (ended - 0.5) * 1000


def test_stop_when_idle_ends_the_streaming_pipeline(stream: str) -> None:
    # GIVEN an empty stream
    # WHEN read with stop_when_idle_seconds = 1
    run = run_read(stream_name=stream, start=StartPosition(), **FAST)
    # THEN the pipeline ends on its own, after about a second of idleness, having emitted nothing
    assert run.batches == []
    assert 1.0 <= run.seconds < 10.0
