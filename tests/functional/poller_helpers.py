"""Test doubles for the feed poller's functional tests: emitters, a Lambda context, crash simulation.

``ListEmitter`` keeps envelopes in memory (thread-safe); ``KinesisEmitter`` is a deliberately tiny
``put_records`` emitter for a moto stream (the real publisher lives in ``edge_lambdas/shared``);
``CrashingStore`` and ``CrashingEmitter`` make a poll die after emitting, before its checkpoint;
``AtomicStore`` gives moto's DynamoDB the per-item atomicity of conditional writes that DynamoDB has.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sluice.core.contracts import Envelope
from sluice.edges.polling import Checkpoint, CheckpointStore
from sluice.stream.envelopes import encode


class ListEmitter:
    """Collects every emitted envelope, in order, across threads."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, envelopes: list[Envelope]) -> None:
        with self._lock:
            self.envelopes.extend(envelopes)
            self.calls += 1

    def take(self) -> list[Envelope]:
        """The envelopes emitted since the last ``take``."""
        with self._lock:
            taken, self.envelopes = self.envelopes, []
            return taken


class CrashingEmitter(ListEmitter):
    """Delivers the first ``deliver`` envelopes of its next call, then fails, like a process killed
    in the middle of a PutRecords series."""

    def __init__(self, deliver: int) -> None:
        super().__init__()
        self.deliver = deliver
        self.armed = True

    def __call__(self, envelopes: list[Envelope]) -> None:
        if not self.armed:
            return super().__call__(envelopes)
        self.armed = False
        super().__call__(envelopes[: self.deliver])
        raise ConnectionError("simulated crash while emitting")


class CrashingStore(CheckpointStore):
    """Wraps a store; its next ``commit`` fails and, as a dead process would, nothing is released."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner = inner
        self.armed = True

    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        return self.inner.acquire(feed, owner, now, lease_seconds)

    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        if self.armed:
            self.armed = False
            self.dead_owner = owner
            raise RuntimeError("simulated crash before the checkpoint write")
        self.inner.commit(checkpoint, owner, expected_version)

    def release(self, feed: str, owner: str) -> None:
        if owner != getattr(self, "dead_owner", None):  # a dead process releases nothing
            self.inner.release(feed, owner)


class AtomicStore(CheckpointStore):
    """Makes each store call atomic with respect to the other pollers sharing ``lock``.

    DynamoDB applies a conditional write to an item atomically; moto evaluates the condition and
    then writes without a lock (``moto/dynamodb/models.update_item``), so two truly simultaneous
    lease requests can both succeed there. Only single calls are serialized: the polls themselves
    still run concurrently.
    """

    def __init__(self, inner: CheckpointStore, lock: threading.Lock) -> None:
        self.inner, self.lock = inner, lock

    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        with self.lock:
            return self.inner.acquire(feed, owner, now, lease_seconds)

    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        with self.lock:
            self.inner.commit(checkpoint, owner, expected_version)

    def release(self, feed: str, owner: str) -> None:
        with self.lock:
            self.inner.release(feed, owner)


class KinesisEmitter:
    """``put_records`` in chunks of 500; raises if any record failed (the poller then retries)."""

    def __init__(self, client: Any, stream_name: str) -> None:
        self.client, self.stream_name = client, stream_name

    def __call__(self, envelopes: list[Envelope]) -> None:
        for start in range(0, len(envelopes), 500):
            chunk = envelopes[start : start + 500]
            response = self.client.put_records(
                StreamName=self.stream_name,
                Records=[{"Data": encode(e), "PartitionKey": e.partition_key} for e in chunk],
            )
            if response["FailedRecordCount"]:
                raise RuntimeError(f"{response['FailedRecordCount']} records not accepted")


def read_stream(client: Any, stream_name: str) -> list[bytes]:
    """Every record in every shard of a (small, test) stream, from the start."""
    records: list[bytes] = []
    shards = client.list_shards(StreamName=stream_name)["Shards"]
    for shard in shards:
        iterator = client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(record["Data"] for record in response["Records"])
            if not response["Records"]:
                break
            iterator = response.get("NextShardIterator")
    return records


@dataclass
class FakeLambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str = "sluice-feed-poller"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:sluice-feed-poller"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "6f1d2c3b-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/sluice-feed-poller"
    log_stream_name: str = "2026/11/26/[$LATEST]0123456789abcdef"
    remaining_seconds: float = 60.0

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_seconds * 1000)
