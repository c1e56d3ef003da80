"""Helpers for the ``ReadFromKinesis`` pipeline tests: run a read, feed a stream, reshard it, break it.

In: a moto server (the ``aws_env`` fixture), stream names, records to put.
Out: ``run_read`` runs ``ReadFromKinesis`` into a collecting sink and returns what came out, in
emission order, with the run's counters; ``ReadFaultProxy`` (the functional tests' ``FaultProxy``
plus GetRecords faults and a log of GetRecords calls); helpers that put plain and KPL-aggregated
records, reshard the way Kinesis does, and read arrival times directly.

Why reshard inside moto's model: moto 5.2.5's SplitShard and MergeShards differ from Kinesis (checked
over the wire): after SplitShard, moto re-puts the parent's records and routes them, and every later
put in the parent's range, to the closed parent (its put routing takes the first shard covering a
hash key, closed or not); MergeShards copies both parents' records into the child while the parents
keep them. A reader following Kinesis' rules would read records twice or miss them, so
``split_shard_like_kinesis`` / ``merge_shards_like_kinesis`` do what Kinesis does (the parent closes
and keeps its records, empty children take its hash range) in the in-process moto backend that the
``moto_endpoint`` fixture's ThreadedMotoServer serves; every read still goes over HTTP.
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
import itertools
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.kinesis.models import Record, Shard, Stream, kinesis_backends

from beam_jobs.metrics import DistributionSummary, query_counters, query_distributions
from beam_jobs.read_kinesis import ReadFromKinesis
from sluice.stream.kinesis.records import SourceBatch, SourceRecord
from sluice.stream.kpl import UserRecord, aggregate

# The fault proxy lives with the functional tests (pytest puts that folder on sys.path only for
# them); it is imported as the same top-level module they use, so there is one copy of it.
_FUNCTIONAL = str(Path(__file__).resolve().parent.parent / "functional")
if _FUNCTIONAL not in sys.path:
    sys.path.append(_FUNCTIONAL)
from faults import FaultProxy, _error  # noqa: E402

TEST_RUNNER = "FnApiRunner"
"""Beam 2.77's DirectRunner first tries to download Prism, then runs this; pinned so every machine
runs the same runner. (The BundleBasedDirectRunner fails on splittable DoFns in 2.77.)"""

GET_RECORDS_TARGET = "Kinesis_20131202.GetRecords"
REGION = "us-east-1"


# Running a read ------------------------------------------------------------------------------------

_COLLECTED: dict[str, list[tuple[float, SourceBatch | int, int]]] = {}
_COLLECTED_LOCK = threading.Lock()


class _Collect(beam.DoFn):
    """Keeps each batch (or only its size) with the time it arrived and the thread that handled it,
    in arrival order, per run."""

    def __init__(self, run_id: str, keep_batches: bool) -> None:
        self._run_id = run_id
        self._keep = keep_batches

    def process(self, batch: SourceBatch) -> None:
        with _COLLECTED_LOCK:
            _COLLECTED[self._run_id].append(
                (
                    time.monotonic(),
                    batch if self._keep else len(batch.records),
                    threading.get_ident(),
                )
            )


@dataclass
class ReadRun:
    """What one ``run_read`` produced."""

    batches: list[SourceBatch]
    counters: dict[str, int]
    distributions: dict[str, DistributionSummary]
    seconds: float
    """Wall time from pipeline construction to its end (includes start-up and the idle wait)."""
    seconds_to_first_batch: float | None
    """From pipeline construction to the sink receiving the first batch (start-up, first call)."""
    seconds_to_last_batch: float | None
    """From pipeline construction to the sink receiving the last batch."""
    records_received: int
    threads: list[int] = field(default_factory=list)
    """The thread that handled each of ``batches`` (several with ``direct_num_workers``)."""

    def by_shard(self) -> dict[str, list[SourceBatch]]:
        shards: dict[str, list[SourceBatch]] = {}
        for batch in self.batches:
            shards.setdefault(batch.shard_id, []).append(batch)
        return shards

    def records(self) -> list[SourceRecord]:
        return [record for batch in self.batches for record in batch.records]

    def data(self) -> list[bytes]:
        return [record.data for record in self.records()]


def run_read(
    *,
    timeout_seconds: float = 60.0,
    keep_batches: bool = True,
    pipeline_flags: Sequence[str] = (),
    **settings: Any,
) -> ReadRun:
    """Run ``ReadFromKinesis(**settings)`` into a collecting sink until it stops (stop-when-idle).

    The pipeline runs in a daemon thread, so a reader that never stops fails the test after
    ``timeout_seconds`` instead of hanging the suite. ``pipeline_flags``: more Beam options (e.g.
    ``--direct_num_workers=2``).
    """
    run_id = uuid.uuid4().hex
    _COLLECTED[run_id] = []
    started = time.monotonic()
    pipeline = beam.Pipeline(
        options=PipelineOptions(flags=list(pipeline_flags), streaming=True, runner=TEST_RUNNER)
    )
    _ = (
        pipeline
        | "ReadFromKinesis" >> ReadFromKinesis(**settings)
        | "Collect" >> beam.ParDo(_Collect(run_id, keep_batches))
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            result = pipeline.run()
            result.wait_until_finish()
            outcome["result"] = result
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread below
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"pipeline-{run_id[:8]}", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    seconds = time.monotonic() - started
    collected = _COLLECTED.pop(run_id)
    if thread.is_alive():
        raise AssertionError(f"the pipeline was still running after {timeout_seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    batches = [item for _, item, _ in collected if isinstance(item, SourceBatch)]
    threads = [thread for _, item, thread in collected if isinstance(item, SourceBatch)]
    sizes = [
        len(item.records) if isinstance(item, SourceBatch) else item for _, item, _ in collected
    ]
    return ReadRun(
        batches=batches,
        counters=query_counters(outcome["result"]),
        distributions=query_distributions(outcome["result"]),
        seconds=seconds,
        seconds_to_first_batch=collected[0][0] - started if collected else None,
        seconds_to_last_batch=collected[-1][0] - started if collected else None,
        records_received=sum(sizes),
        threads=threads,
    )


# Feeding a stream ----------------------------------------------------------------------------------


def create_stream(client: Any, shard_count: int = 2) -> str:
    name = f"sluice-read-{uuid.uuid4().hex[:12]}"
    client.create_stream(StreamName=name, ShardCount=shard_count)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    return name


@dataclass(frozen=True, slots=True)
class Put:
    """Where a put record landed."""

    shard_id: str
    sequence_number: str


def put_records(
    client: Any,
    stream: str,
    entries: Sequence[tuple[str, bytes]],
    explicit_hash_key: str | None = None,
) -> list[Put]:
    """Put (partition key, data) entries in order, 500 per call; every entry must succeed (moto)."""
    landed: list[Put] = []
    for start in range(0, len(entries), 500):
        chunk = entries[start : start + 500]
        records = [
            {"PartitionKey": key, "Data": data}
            | ({"ExplicitHashKey": explicit_hash_key} if explicit_hash_key else {})
            for key, data in chunk
        ]
        response = client.put_records(StreamName=stream, Records=records)
        assert response["FailedRecordCount"] == 0, response
        landed.extend(Put(r["ShardId"], r["SequenceNumber"]) for r in response["Records"])
    return landed


def put_aggregated(
    client: Any, stream: str, user_records: Iterable[UserRecord], per_aggregate: int
) -> list[Put]:
    """Put user records KPL-aggregated, ``per_aggregate`` consecutive user records per Kinesis record."""
    users = list(user_records)
    aggregates = [
        aggregated
        for start in range(0, len(users), per_aggregate)
        for aggregated in aggregate(users[start : start + per_aggregate])
    ]
    return put_records(client, stream, [(a.partition_key, a.data) for a in aggregates])


def shard_hash_key(client: Any, stream: str, shard_id: str) -> str:
    """An ExplicitHashKey that routes a put to ``shard_id`` (its starting hash key)."""
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        if shard["ShardId"] == shard_id:
            return str(shard["HashKeyRange"]["StartingHashKey"])
    raise KeyError(shard_id)


def arrival_times(client: Any, stream: str) -> dict[tuple[str, str], float]:
    """ApproximateArrivalTimestamp of every record, by (shard, sequence number), read directly."""
    arrivals: dict[tuple[str, str], float] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while True:
            response = client.get_records(ShardIterator=iterator, Limit=10_000)
            for record in response["Records"]:
                key = (shard["ShardId"], record["SequenceNumber"])
                arrivals[key] = record["ApproximateArrivalTimestamp"].timestamp()
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return arrivals


# Resharding as Kinesis does it (see the module docstring) ------------------------------------------


def _moto_stream(name: str) -> Stream:
    stream: Stream = kinesis_backends[DEFAULT_ACCOUNT_ID][REGION].streams[name]
    return stream


def _add_shards(stream: Stream, new_shards: Iterable[Shard]) -> None:
    shards = {**stream.shards, **{shard.shard_id: shard for shard in new_shards}}
    # Open shards first: moto routes a put to the first shard covering its hash key. One
    # assignment, so moto's request threads see either the old or the new dict.
    stream.shards = dict(sorted(shards.items(), key=lambda item: not item[1].is_open))


def _next_shard_number(stream: Stream) -> int:
    return max(int(shard_id.rsplit("-", 1)[1]) for shard_id in stream.shards) + 1


def split_shard_like_kinesis(stream_name: str, shard_id: str) -> tuple[str, str]:
    """Close ``shard_id`` (it keeps its records) and give its hash range to two new, empty shards."""
    stream = _moto_stream(stream_name)
    parent = stream.shards[shard_id]
    assert parent.is_open, f"{shard_id} is already closed"
    middle = (parent.starting_hash + parent.ending_hash) // 2
    number = _next_shard_number(stream)
    low = Shard(number, parent.starting_hash, middle - 1, parent=shard_id)
    high = Shard(number + 1, middle, parent.ending_hash, parent=shard_id)
    parent.is_open = False
    _add_shards(stream, [low, high])
    return low.shard_id, high.shard_id


def merge_shards_like_kinesis(stream_name: str, shard_id: str, adjacent_shard_id: str) -> str:
    """Close two adjacent shards (they keep their records) and give their range to one new shard."""
    stream = _moto_stream(stream_name)
    first, second = stream.shards[shard_id], stream.shards[adjacent_shard_id]
    assert first.is_open and second.is_open
    assert first.ending_hash + 1 == second.starting_hash, "shards are not adjacent"
    child = Shard(
        _next_shard_number(stream),
        first.starting_hash,
        second.ending_hash,
        parent=shard_id,
        adjacent_parent=adjacent_shard_id,
    )
    first.is_open = second.is_open = False
    _add_shards(stream, [child])
    return child.shard_id


def load_records(stream_name: str, entries: Iterable[tuple[str, bytes]]) -> int:
    """Store records straight into moto's backend, for benchmarks: moto's PutRecords copies the
    shard's key list for every record (about 2,000 records/s at 50k records per shard)."""
    stream = _moto_stream(stream_name)
    last = {shard_id: shard.get_max_sequence_number() for shard_id, shard in stream.shards.items()}
    count = 0
    for key, data in entries:
        shard = stream.get_shard_for_key(key, "")
        assert shard is not None
        last[shard.shard_id] += 1
        sequence = last[shard.shard_id]
        shard.records[sequence] = Record(key, base64.b64encode(data).decode(), sequence, "")
        count += 1
    return count


# Faults on the read path ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetRecordsCall:
    """One GetRecords request as the proxy saw it."""

    at: float
    """``time.monotonic()`` when the proxy received it."""
    shard_id: str
    fault: str | None


@dataclass
class _ReadFault:
    code: str
    status: int
    times: int | None


@dataclass
class _ReadLog:
    calls: list[GetRecordsCall] = field(default_factory=list)
    faults: list[_ReadFault] = field(default_factory=list)


def _moto_iterator_shard(iterator: str) -> str:
    # moto's shard iterators are base64 of "stream:shard:sequence" (an emulator detail).
    return base64.b64decode(iterator).decode().split(":")[1]


class ReadFaultProxy(FaultProxy):
    """``FaultProxy`` that can also fail GetRecords calls and logs every GetRecords call per shard."""

    def __init__(self, upstream: str) -> None:
        self._read = _ReadLog()  # before the server thread starts in FaultProxy.__init__
        super().__init__(upstream)

    @property
    def get_records_calls(self) -> list[GetRecordsCall]:
        with self._lock:
            return list(self._read.calls)

    def fail_get_records(self, code: str, *, times: int | None = 1, status: int = 400) -> None:
        """The next ``times`` GetRecords calls (None: all) fail with ``code``, after earlier faults."""
        with self._lock:
            self._read.faults.append(_ReadFault(code, status, times))

    def wait_for_get_records(self, shards: int, timeout_seconds: float = 20.0) -> None:
        """Block until GetRecords was called on ``shards`` distinct shards."""
        deadline = time.monotonic() + timeout_seconds
        while len({call.shard_id for call in self.get_records_calls}) < shards:
            if time.monotonic() > deadline:
                raise AssertionError(f"no GetRecords on {shards} shards within {timeout_seconds} s")
            time.sleep(0.01)

    def _take_read_fault(self) -> _ReadFault | None:
        with self._lock:
            if not self._read.faults:
                return None
            fault = self._read.faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._read.faults.pop(0)
            return fault

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), None)
        if target != GET_RECORDS_TARGET:
            return super().forward(method, path, headers, body)
        shard_id = _moto_iterator_shard(orjson.loads(body)["ShardIterator"])
        fault = self._take_read_fault()
        with self._lock:
            self._read.calls.append(
                GetRecordsCall(time.monotonic(), shard_id, fault.code if fault else None)
            )
        if fault is not None:
            return _error(fault.status, fault.code, f"injected {fault.code} for {shard_id}")
        return super().forward(method, path, headers, body)


def every_shard_call_gap(calls: Iterable[GetRecordsCall]) -> dict[str, list[float]]:
    """Seconds between consecutive GetRecords calls, per shard."""
    times: dict[str, list[float]] = {}
    for call in calls:
        times.setdefault(call.shard_id, []).append(call.at)
    return {shard: [b - a for a, b in itertools.pairwise(ts)] for shard, ts in times.items()}


def background(target: Callable[[], None]) -> Callable[[], None]:
    """Start ``target`` in a daemon thread; the returned function joins it and re-raises its error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread by join()
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(30)
        assert not thread.is_alive(), "background producer did not finish"
        if errors:
            raise errors[0]

    return join
