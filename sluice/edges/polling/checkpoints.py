"""Feed checkpoints: what a poll has seen, bounded and encoded, and the store that keeps it.

In: the checkpoint read when a feed's lease is taken, and the items and dead letters of a poll.
Out: ``SeenSet`` (which item versions and dead letters are new); the next ``Checkpoint`` bounded by
``CheckpointBounds`` (``bound_checkpoint``) with its compressed seen state (``encode_seen_state``);
``CheckpointStore``, the contract of lease-and-checkpoint stores, and ``InMemoryCheckpointStore``.
Dead letters: none; they are de-duplicated by id here like items, so a bad item still in the feed is
dead-lettered once. An undecodable stored state is ``CheckpointCorrupt``; a checkpoint write whose
lease or version moved on is ``LeaseLost``.
Why: de-duplication must agree with the event ids (``seen_key`` hashes what ``feed_event_id``
hashes) and the stored state must stay under DynamoDB's item limit; dropping an entry can only cause
a re-emission with the same id, never a skip.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from threading import Lock
from typing import Any, TypeVar

import orjson

from sluice.core.contracts import FeedItem
from sluice.core.deadletters import BatchResult
from sluice.core.errors import SluiceError

__all__ = [
    "DEFAULT_CHECKPOINT_MAX_BYTES",
    "DEFAULT_SEEN_MAX_AGE_SECONDS",
    "DEFAULT_SEEN_MAX_DEAD_LETTERS",
    "DEFAULT_SEEN_MAX_ITEMS",
    "Checkpoint",
    "CheckpointBounds",
    "CheckpointCorrupt",
    "CheckpointStore",
    "InMemoryCheckpointStore",
    "LeaseLost",
    "SeenSet",
    "bound_checkpoint",
    "decode_seen_state",
    "encode_seen_state",
    "seen_key",
]


class LeaseLost(SluiceError):
    """The conditional checkpoint write failed: another invocation holds the lease or moved on."""


class CheckpointCorrupt(SluiceError):
    """A stored checkpoint cannot be decoded; delete the feed's checkpoint item to start over."""


SeenKey = tuple[str, str]
"""(item id, updated time as ISO-8601): the identity ``feed_event_id`` hashes, minus the feed."""


def seen_key(item: FeedItem) -> SeenKey:
    # Same inputs as sluice.stream.envelopes.feed_event_id, so "seen" and "same event id" always agree.
    return item.item_id, (item.updated_time or item.event_time).isoformat()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A feed's polling state after its last successful poll (version 0: never polled).

    ``seen`` and ``dead_letters`` map (item id, updated) pairs and dead-letter ids to the epoch second
    they were last seen in the feed, so entries age out only after they have left the feed.
    """

    feed: str
    version: int = 0
    source_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    seen: Mapping[SeenKey, int] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)
    committed_at: float | None = None


DEFAULT_SEEN_MAX_ITEMS = 20_000
DEFAULT_SEEN_MAX_DEAD_LETTERS = 1_000
DEFAULT_SEEN_MAX_AGE_SECONDS = 7 * 86_400
DEFAULT_CHECKPOINT_MAX_BYTES = 300_000
"""The defaults of ``CheckpointBounds``, which the feed poller Lambda's ``seen_max_*`` and
``checkpoint_max_bytes`` settings share."""


@dataclass(frozen=True, slots=True)
class CheckpointBounds:
    """Keeps a checkpoint well under DynamoDB's 400 KB item limit."""

    max_items: int = DEFAULT_SEEN_MAX_ITEMS
    max_dead_letters: int = DEFAULT_SEEN_MAX_DEAD_LETTERS
    max_age_seconds: int = DEFAULT_SEEN_MAX_AGE_SECONDS
    max_bytes: int = DEFAULT_CHECKPOINT_MAX_BYTES


_STATE_FORMAT = 1


def encode_seen_state(checkpoint: Checkpoint) -> bytes:
    """The seen sets as compressed JSON: sorted, so equal states encode to equal bytes."""
    state = {
        "format": _STATE_FORMAT,
        "items": sorted([i, u, t] for (i, u), t in checkpoint.seen.items()),
        "dead_letters": sorted([d, t] for d, t in checkpoint.dead_letters.items()),
    }
    return zlib.compress(orjson.dumps(state), 6)


def decode_seen_state(blob: bytes | None) -> tuple[dict[SeenKey, int], dict[str, int]]:
    """Inverse of ``encode_seen_state``; ``None`` or empty is an empty state."""
    if not blob:
        return {}, {}
    try:
        state = orjson.loads(zlib.decompress(blob))
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown format {state.get('format')!r}")
        items = {(str(i), str(u)): int(t) for i, u, t in state["items"]}
        dead = {str(d): int(t) for d, t in state["dead_letters"]}
    except (
        zlib.error,
        orjson.JSONDecodeError,
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
    ) as err:
        raise CheckpointCorrupt(f"seen-state blob of {len(blob)} bytes: {err}") from None
    return items, dead


K = TypeVar("K")


def _newest(entries: Mapping[K, int], cutoff: int, limit: int) -> dict[K, int]:
    fresh = [(k, t) for k, t in entries.items() if t >= cutoff]
    if len(fresh) > limit:
        # Newest first; ties (one poll's items share a time) broken by key so the result is stable.
        fresh.sort(key=lambda kt: (kt[1], str(kt[0])), reverse=True)
        fresh = fresh[:limit]
    return dict(fresh)


def bound_checkpoint(
    checkpoint: Checkpoint, bounds: CheckpointBounds, now: float
) -> tuple[Checkpoint, bytes, int]:
    """Drop entries not seen for ``max_age_seconds``, then the least recently seen beyond the counts,
    then more until the encoded state fits ``max_bytes``. Returns the bounded checkpoint, its encoded
    seen state and how many entries were dropped.

    Dropping an entry of an item still in the feed makes the next poll emit it again (same event id):
    a duplicate, never a loss. The defaults keep a week of USGS ``all_day`` (~300 items a day).
    """
    cutoff = int(now) - bounds.max_age_seconds
    total = len(checkpoint.seen) + len(checkpoint.dead_letters)
    max_items, max_dead = bounds.max_items, bounds.max_dead_letters
    while True:
        bounded = replace(
            checkpoint,
            seen=_newest(checkpoint.seen, cutoff, max_items),
            dead_letters=_newest(checkpoint.dead_letters, cutoff, max_dead),
        )
        blob = encode_seen_state(bounded)
        kept = len(bounded.seen) + len(bounded.dead_letters)
        if len(blob) <= bounds.max_bytes or kept == 0:
            return bounded, blob, total - kept
        shrink = 0.9 * bounds.max_bytes / len(blob)  # sizes are roughly proportional to counts
        max_items = min(len(bounded.seen) - 1, int(len(bounded.seen) * shrink))
        max_dead = min(len(bounded.dead_letters), int(len(bounded.dead_letters) * shrink))
        max_items, max_dead = max(max_items, 0), max(max_dead, 0)


class SeenSet:
    """De-duplication of one poll against a checkpoint.

    An item version (item id, updated time) is new when neither the checkpoint nor an earlier page of
    this poll has it; an updated item has a new updated time, so it is new again (with a new event id).
    Every observed entry gets ``now`` as its last-seen time, so only entries that left the feed age out.
    """

    def __init__(self, checkpoint: Checkpoint, now: float) -> None:
        self._now = int(now)
        self._seen = dict(checkpoint.seen)
        self._dead = dict(checkpoint.dead_letters)
        self._known_items = set(checkpoint.seen)
        self._known_dead = set(checkpoint.dead_letters)

    def observe_item(self, item: FeedItem) -> bool:
        key = seen_key(item)
        is_new = key not in self._seen
        self._seen[key] = self._now
        return is_new

    def observe_dead_letter(self, dead_letter_id: str) -> bool:
        is_new = dead_letter_id not in self._dead
        self._dead[dead_letter_id] = self._now
        return is_new

    def split(self, result: BatchResult[FeedItem]) -> tuple[BatchResult[FeedItem], int]:
        """The new items and dead letters of a parsed page, and how many were duplicates."""
        fresh: BatchResult[FeedItem] = BatchResult()
        fresh.valid = [item for item in result.valid if self.observe_item(item)]
        fresh.dead_letters = [
            letter
            for letter in result.dead_letters
            if self.observe_dead_letter(letter.dead_letter_id)
        ]
        duplicates = len(result.valid) + len(result.dead_letters)
        duplicates -= len(fresh.valid) + len(fresh.dead_letters)
        return fresh, duplicates

    def checkpoint(self, base: Checkpoint, **changes: Any) -> Checkpoint:
        return replace(base, seen=dict(self._seen), dead_letters=dict(self._dead), **changes)


class CheckpointStore(ABC):
    """Where feed checkpoints and leases live (DynamoDB in production, memory in tests).

    Implementations must make each method one atomic conditional operation.
    """

    @abstractmethod
    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        """Take the feed's lease if nobody holds an unexpired one; return its checkpoint, else ``None``."""

    @abstractmethod
    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        """Store ``checkpoint`` (its ``version`` is the new one) and release the lease, only if
        ``owner`` still holds the lease and the stored version is ``expected_version``; otherwise
        raise ``LeaseLost`` and change nothing."""

    @abstractmethod
    def release(self, feed: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it; a no-op otherwise."""


@dataclass(slots=True)
class _StoredFeed:
    blob: bytes = b""
    checkpoint: Checkpoint | None = None
    lease_owner: str | None = None
    lease_expires: float = 0.0


class InMemoryCheckpointStore(CheckpointStore):
    """Thread-safe in-memory store for tests and local runs; keeps the encoded state like DynamoDB."""

    def __init__(self) -> None:
        self._feeds: dict[str, _StoredFeed] = {}
        self._lock = Lock()

    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        with self._lock:
            stored = self._feeds.setdefault(feed, _StoredFeed())
            if stored.lease_owner is not None and stored.lease_expires > now:
                return None
            stored.lease_owner, stored.lease_expires = owner, now + lease_seconds
            if stored.checkpoint is None:
                return Checkpoint(feed=feed)
            seen, dead = decode_seen_state(stored.blob)
            return replace(stored.checkpoint, seen=seen, dead_letters=dead)

    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        with self._lock:
            stored = self._feeds.setdefault(checkpoint.feed, _StoredFeed())
            version = stored.checkpoint.version if stored.checkpoint else 0
            if stored.lease_owner != owner or version != expected_version:
                raise LeaseLost(
                    f"feed {checkpoint.feed!r}: lease held by {stored.lease_owner!r}, "
                    f"version {version} (expected {owner!r}, {expected_version})"
                )
            stored.blob = encode_seen_state(checkpoint)
            stored.checkpoint = replace(checkpoint, seen={}, dead_letters={})
            stored.lease_owner, stored.lease_expires = None, 0.0

    def release(self, feed: str, owner: str) -> None:
        with self._lock:
            stored = self._feeds.get(feed)
            if stored is not None and stored.lease_owner == owner:
                stored.lease_owner, stored.lease_expires = None, 0.0
