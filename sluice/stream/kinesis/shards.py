"""Shard rules of a Kinesis read: which shards to read now, how to continue one, the stream's watermark.

In: the ListShards listing (``ShardInfo`` per shard: parents, closed or not), the shards done, a
shard's position and the read's ``StartPosition``; the progress of the open shards.
Out: the shards readable now (every parent done), the GetShardIterator arguments that continue a
shard, the ancestors of shards, and the stream's watermark.

Dead letters: none; these are pure rules over the listing.

Why children wait for their parents: after a split or merge, a key's older records are in the
parent shard; reading a child only once every parent is read to its end keeps every key's records
in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sluice.stream.kinesis.positions import StartPosition

__all__ = ["ShardInfo", "ancestors", "iterator_request", "readable_shards", "stream_watermark"]


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """What ListShards says about a shard: its parents (split: one, merge: two) and whether it is closed."""

    shard_id: str
    parents: tuple[str, ...]
    closed: bool

    @staticmethod
    def from_response(shard: Mapping[str, Any]) -> ShardInfo:
        parents = tuple(
            parent
            for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
            if parent
        )
        closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
        return ShardInfo(shard["ShardId"], parents, closed)


def ancestors(shard_ids: Iterable[str], shards: Mapping[str, ShardInfo]) -> set[str]:
    """Every listed ancestor of ``shard_ids`` (parents, their parents, ...), excluding themselves."""
    found: set[str] = set()
    pending = [p for s in shard_ids if s in shards for p in shards[s].parents]
    while pending:
        shard = pending.pop()
        if shard in found or shard not in shards:
            continue
        found.add(shard)
        pending.extend(shards[shard].parents)
    return found


def readable_shards(shards: Mapping[str, ShardInfo], done: set[str] | frozenset[str]) -> list[str]:
    """Shards to read now, in id order: not done, and every parent done.

    A parent missing from the listing has aged out of the stream (retention), so it counts as done.
    """
    return [
        shard_id
        for shard_id, info in sorted(shards.items())
        if shard_id not in done and all(p in done or p not in shards for p in info.parents)
    ]


def iterator_request(
    shard_id: str,
    position: str | None,
    start: StartPosition,
    start_timestamp: float | None,
    after_saved_shard: bool,
) -> dict[str, Any]:
    """GetShardIterator arguments (besides stream and shard) that continue reading ``shard_id``."""
    if position is None:
        position = start.after_sequence.get(shard_id)
    if position is not None:
        return {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": position}
    if after_saved_shard:
        return {"ShardIteratorType": "TRIM_HORIZON"}
    if start_timestamp is not None:
        return {
            "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": datetime.fromtimestamp(start_timestamp, UTC),
        }
    return {"ShardIteratorType": "TRIM_HORIZON"}


def stream_watermark(progress: Iterable[float | None]) -> float | None:
    """The stream's watermark from its open shards' progress: the slowest, or None while any is unknown."""
    values = list(progress)
    if not values or any(value is None for value in values):
        return None
    return min(value for value in values if value is not None)
