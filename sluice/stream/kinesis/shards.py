"""Shard rules of a Kinesis read: which shards to read now, how to continue one, the stream's watermark.

In: the ListShards listing (``ShardInfo`` per shard: parents, closed or not), the shards done, a
shard's position and the read's ``StartPosition``; the progress of the open shards.
Out: the shards readable now (every parent done), the GetShardIterator arguments that continue a
shard, the ancestors of shards, and the stream's watermark.

Dead letters: none; these are pure rules over the listing.

Why children wait for their parents: after a split or merge, a key's older records are in the
parent shard; reading a child only once every parent is read to its end keeps every key's records
in order. Why lineages: shards linked by splits and merges (a connected part of the shard graph)
are read by one reader, which follows their resharding itself; separate lineages are read in
parallel. A child joins the lineage of its first parent (``ParentShardId``). A merge of two shards
of *different* lineages (after the split) is read by the first parent's reader once that parent is
read to its end and the other parent is closed: readers share nothing to learn that the other
lineage's reader finished it, so keys of the adjacent parent may see child records before the last
of that parent's (positions are per shard, so nothing is lost or doubled).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sluice.stream.kinesis.positions import StartPosition

__all__ = [
    "ShardInfo",
    "adopted_shards",
    "ancestors",
    "iterator_request",
    "lineages",
    "readable_shards",
    "stream_watermark",
]


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


def lineages(shards: Mapping[str, ShardInfo]) -> list[frozenset[str]]:
    """The listed shards grouped by lineage (linked by a parent either way), sorted by smallest id."""
    neighbours: dict[str, set[str]] = {s: set() for s in shards}
    for shard_id, info in shards.items():
        for parent in info.parents:
            if parent in shards:
                neighbours[shard_id].add(parent)
                neighbours[parent].add(shard_id)
    groups: list[frozenset[str]] = []
    seen: set[str] = set()
    for shard_id in sorted(shards):
        if shard_id in seen:
            continue
        group, pending = set(), [shard_id]
        while pending:
            current = pending.pop()
            if current not in group:
                group.add(current)
                pending.extend(neighbours[current] - group)
        seen |= group
        groups.append(frozenset(group))
    return groups


def adopted_shards(owned: frozenset[str], shards: Mapping[str, ShardInfo]) -> frozenset[str]:
    """Listed shards not in ``owned`` whose first parent is in it or adopted (children, grandchildren)."""
    adopted: set[str] = set()
    grew = True
    while grew:
        grew = False
        for shard_id, info in shards.items():
            if shard_id in owned or shard_id in adopted or not info.parents:
                continue
            if info.parents[0] in owned or info.parents[0] in adopted:
                adopted.add(shard_id)
                grew = True
    return frozenset(adopted)


def readable_shards(
    shards: Mapping[str, ShardInfo],
    done: set[str] | frozenset[str],
    owned: frozenset[str] | None = None,
) -> list[str]:
    """Shards to read now, in id order: owned (None: all), not done, and every parent done.

    A parent missing from the listing has aged out of the stream (retention), so it counts as done;
    a parent of another lineage (not in ``owned``) counts as done once it is closed.
    """
    return [
        shard_id
        for shard_id, info in sorted(shards.items())
        if (owned is None or shard_id in owned)
        and shard_id not in done
        and all(
            p in done
            or p not in shards
            or (owned is not None and p not in owned and shards[p].closed)
            for p in info.parents
        )
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
