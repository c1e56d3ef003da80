"""ReadFromKinesis split by shard lineage: lineages read in parallel, resharding still in order.

The source's initial restriction is split into one restriction per lineage (shards linked by splits
and merges); children found while reading join their first parent's lineage. Against the session's
moto server, the lineages are read

- by the FnApiRunner (its default single worker interleaves the restrictions' bundles), and
- by two worker threads, each driving its restrictions through the source's own tracker and reader
  the way a runner does (claims, a checkpoint every few rounds resumed by a fresh reader, as after
  a restore on another worker). The FnApiRunner's own multi-worker mode cannot run an unbounded
  splittable DoFn: its ``ParallelBundleManager`` merges the workers' responses without their
  residuals, so every restriction ends after its first bundle (seen with Beam 2.77; apache/beam
  issue #19842 tracks SDFs on multiple FnApiRunner workers).
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from kinesis_testkit import (
    background,
    create_stream,
    merge_shards_like_kinesis,
    put_records,
    run_read,
    split_shard_like_kinesis,
)

from beam_jobs.kinesis_client import BOTOCORE_ERRORS, kinesis_client
from beam_jobs.read_kinesis import ReadFromKinesis, StreamRestrictionTracker
from sluice.stream.kinesis.positions import StartPosition, StreamRestriction
from sluice.stream.kinesis.reader import KinesisStreamReader
from sluice.stream.kinesis.records import SourceBatch
from sluice.stream.kinesis.shards import ShardInfo, adopted_shards, lineages, readable_shards

SHARD_0 = "shardId-000000000000"
SHARD_1 = "shardId-000000000001"
SHARD_2 = "shardId-000000000002"
FAST: dict[str, Any] = {
    "stop_when_idle_seconds": 1.5,
    "backoff_base_seconds": 0.01,
    "backoff_cap_seconds": 0.05,
    "discovery_interval_seconds": 0.5,
}


def _info(shard: str, *parents: str, closed: bool = False) -> ShardInfo:
    return ShardInfo(shard, parents, closed)


# Rules -------------------------------------------------------------------------------------------


def test_lineages_group_shards_linked_by_splits_and_merges() -> None:
    # GIVEN a stream of three shards where 0 was split into 3 and 4, then 4 merged with 1 into 5
    shards = {
        s.shard_id: s
        for s in [
            _info("0", closed=True),
            _info("1", closed=True),
            _info("2"),
            _info("3", "0"),
            _info("4", "0", closed=True),
            _info("5", "4", "1"),
        ]
    }
    # WHEN it is grouped into lineages THEN 0, 1 and their children read together, 2 alone
    assert lineages(shards) == [frozenset({"0", "1", "3", "4", "5"}), frozenset({"2"})]
    # AND once their parent aged out of the listing, siblings no longer wait for anything shared
    del shards["0"]
    assert lineages(shards) == [
        frozenset({"1", "4", "5"}),
        frozenset({"2"}),
        frozenset({"3"}),
    ]


def test_children_join_their_first_parents_lineage() -> None:
    shards = {
        s.shard_id: s
        for s in [_info("0", closed=True), _info("1"), _info("3", "0"), _info("4", "3", "1")]
    }
    assert adopted_shards(frozenset({"0"}), shards) == {"3", "4"}
    assert adopted_shards(frozenset({"1"}), shards) == frozenset()


def test_a_child_of_two_lineages_waits_for_its_own_parent_and_the_other_to_close() -> None:
    # GIVEN shard 4 merged from 0 (this lineage) and 1 (another lineage's)
    open_other = {
        s.shard_id: s for s in [_info("0", closed=True), _info("1"), _info("4", "0", "1")]
    }
    closed_other = {**open_other, "1": _info("1", closed=True)}
    owned = frozenset({"0", "4"})
    # THEN 4 waits while 0 is unfinished or 1 is open, and is read once 0 is done and 1 closed
    assert readable_shards(closed_other, set(), owned) == ["0"]
    assert readable_shards(open_other, {"0"}, owned) == []
    assert readable_shards(closed_other, {"0"}, owned) == ["4"]


# Pipelines ---------------------------------------------------------------------------------------


@pytest.fixture
def kinesis(aws_env: str) -> Any:
    return boto3.client("kinesis", endpoint_url=aws_env)


def _numbered(counter: Counter[str], keys: list[str]) -> list[tuple[str, bytes]]:
    entries = []
    for key in keys:
        counter[key] += 1
        entries.append((key, f"{key}:{counter[key]}".encode()))
    return entries


def _assert_per_key_order(data: list[bytes]) -> None:
    seen: dict[bytes, list[int]] = {}
    for item in data:
        key, n = item.split(b":")
        seen.setdefault(key, []).append(int(n))
    for key, numbers in seen.items():
        assert numbers == sorted(numbers), key


def _read_with_workers(
    settings: dict[str, Any], workers: int, checkpoint_every: int = 3, timeout: float = 60.0
) -> tuple[list[StreamRestriction], list[tuple[SourceBatch, int]]]:
    """Read every initial restriction of ``ReadFromKinesis(**settings)`` on ``workers`` threads.

    Each worker takes restrictions round-robin and drives each through rounds of the source's
    reader, claiming on the source's tracker; every ``checkpoint_every`` rounds it checkpoints
    (``try_split(0)``) and resumes the residual with a fresh tracker (the first time with a fresh
    reader too). Returns the
    restrictions and every batch with the worker that read it, in the order they were read.
    """
    read = ReadFromKinesis(**settings)
    restrictions = read.initial_restrictions()
    out: list[tuple[SourceBatch, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    deadline = time.monotonic() + timeout

    def reader() -> KinesisStreamReader:
        return KinesisStreamReader(
            kinesis_client(read.settings), read.settings, errors=BOTOCORE_ERRORS
        )

    def work(worker: int, mine: list[StreamRestriction]) -> None:
        try:
            active = [(StreamRestrictionTracker(r), reader()) for r in mine]
            rounds = 0
            while active and time.monotonic() < deadline:
                rounds += 1
                for tracker, source in list(active):
                    index = active.index((tracker, source))
                    for batch in source.read_round(
                        tracker.current_restriction(), tracker.try_claim
                    ):
                        with lock:
                            out.append((batch, worker))
                    if source.should_stop() or source.exhausted():
                        del active[index]
                        source.close()
                    elif rounds % checkpoint_every == 0:
                        # A checkpoint; the first one resumes on a fresh reader (a restore on
                        # another worker), later ones on the same reader (the next bundle).
                        _, residual = tracker.try_split(0)
                        if rounds == checkpoint_every:
                            source.close()
                            source = reader()
                        active[index] = (StreamRestrictionTracker(residual), source)
            assert not active, "the read did not stop in time"
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread
            errors.append(error)

    threads = [
        threading.Thread(target=work, args=(w, restrictions[w::workers])) for w in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    if errors:
        raise errors[0]
    return restrictions, out


def _resharding_producer(
    kinesis: Any, stream: str, put: list[bytes], children: dict[str, list[str]]
) -> Callable[[], None]:
    """Puts 10 rounds of 45 numbered records; splits shard 0 after round 3, merges its children
    again after round 6 (both within shard 0's lineage)."""
    counter = Counter[str]()
    keys = [f"k{i}" for i in range(45)]

    def produce() -> None:
        for round_ in range(10):
            entries = _numbered(counter, keys)
            put_records(kinesis, stream, entries)
            put.extend(data for _, data in entries)
            if round_ == 3:
                low, high = split_shard_like_kinesis(stream, SHARD_0)
                children[low] = children[high] = [SHARD_0]
            if round_ == 6:
                merged = merge_shards_like_kinesis(stream, low, high)
                children[merged] = [low, high]
            time.sleep(0.15)

    return produce


def _assert_parents_first(batches: list[SourceBatch], children: dict[str, list[str]]) -> None:
    last = {b.shard_id: i for i, b in enumerate(batches)}
    first: dict[str, int] = {}
    for i, batch in enumerate(batches):
        first.setdefault(batch.shard_id, i)
    assert set(last) == {SHARD_0, SHARD_1, SHARD_2, *children}
    for child, parents in children.items():
        assert all(last[parent] < first[child] for parent in parents), child


def test_two_workers_read_a_resharded_stream_completely_parents_before_children(
    kinesis: Any,
) -> None:
    # GIVEN a 3-shard stream: shard 0 is split while records keep coming and its two children are
    # merged again; shards 1 and 2 are never resharded (three lineages)
    stream = create_stream(kinesis, shard_count=3)
    put: list[bytes] = []
    children: dict[str, list[str]] = {}
    join = background(_resharding_producer(kinesis, stream, put, children))
    # WHEN two workers read the split restrictions meanwhile, checkpointing as they go
    restrictions, out = _read_with_workers(
        {"stream_name": stream, "start": StartPosition(), **FAST}, workers=2
    )
    join()
    # THEN the read was split by lineage, and both workers read
    assert [r.owned for r in restrictions] == [frozenset({s}) for s in (SHARD_0, SHARD_1, SHARD_2)]
    assert {worker for _, worker in out} == {0, 1}
    # AND every record comes out exactly once, every key's records in put order
    batches = [batch for batch, _ in out]
    data = [r.data for b in batches for r in b.records]
    assert Counter(data) == Counter(put)
    _assert_per_key_order(data)
    # AND no child's first batch comes before the last batch of any of its parents
    _assert_parents_first(batches, children)


def test_the_default_runner_reads_split_lineages_completely_parents_before_children(
    kinesis: Any,
) -> None:
    # GIVEN the same resharding stream, WHEN the FnApiRunner reads it (one worker)
    stream = create_stream(kinesis, shard_count=3)
    put: list[bytes] = []
    children: dict[str, list[str]] = {}
    join = background(_resharding_producer(kinesis, stream, put, children))
    run = run_read(stream_name=stream, start=StartPosition(), **FAST)
    join()
    # THEN every record comes out once, per key in order, parents before children
    assert Counter(run.data()) == Counter(put)
    _assert_per_key_order(run.data())
    _assert_parents_first(run.batches, children)


def test_a_merge_across_lineages_loses_and_repeats_nothing(kinesis: Any) -> None:
    # GIVEN two shards (two lineages) merged into one while records keep coming
    stream = create_stream(kinesis, shard_count=2)
    counter = Counter[str]()
    put: list[bytes] = []

    def produce() -> None:
        for round_ in range(8):
            entries = _numbered(counter, [f"k{i}" for i in range(30)])
            put_records(kinesis, stream, entries)
            put.extend(data for _, data in entries)
            if round_ == 3:
                merge_shards_like_kinesis(stream, SHARD_0, SHARD_1)
            time.sleep(0.15)

    # WHEN two workers read it
    join = background(produce)
    _, out = _read_with_workers({"stream_name": stream, "start": StartPosition(), **FAST}, 2)
    join()
    # THEN every record comes out exactly once, and the child after its own lineage's parent
    batches = [batch for batch, _ in out]
    assert Counter(r.data for b in batches for r in b.records) == Counter(put)
    first_child = next(i for i, b in enumerate(batches) if b.shard_id == SHARD_2)
    assert all(i < first_child for i, b in enumerate(batches) if b.shard_id == SHARD_0)
