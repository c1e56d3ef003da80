"""Where a Kinesis read starts, and the restriction that records how far it got.

In: a start (``StartPosition``: TRIM_HORIZON, LATEST or AT_TIMESTAMP, plus saved per-shard sequence
numbers to resume after) and, while reading, claims that a shard's batch was read (``ShardClaim``),
that shards born from the read's own shards join it (``AdoptShards``), or that the read ends
(``STOP_READING``).
Out: ``StreamRestriction``: the shards it reads (one *lineage*: shards linked by splits and merges,
or the whole stream), the last sequence number read from each, the shards read to their end, and
where shards without a position start. A runtime checkpoints it (Beam: the splittable DoFn's
restriction, tracked by ``beam_jobs.read_kinesis.StreamRestrictionTracker``).

Dead letters: none; these are positions, not records.

Why one restriction per lineage: shards of different lineages never wait for each other, so they
are read in parallel; within a lineage one reader follows splits and merges in parent-before-child
order, so the checkpoint that holds its shards' positions is exact. Immutable and picklable, so a
runtime can encode it at every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "STOP_READING",
    "AdoptShards",
    "ShardClaim",
    "StartPosition",
    "StopReading",
    "StreamRestriction",
]


class StartPosition(BaseModel):
    """Where reading starts. Shards with a saved position resume right after it; the others use ``kind``.

    Saved positions also cover resharding since they were saved: ancestors of a shard with a saved
    position were read to their end before it, so they are not read again; a shard without a saved
    position that descends from a saved shard or from one of those ancestors (a child born since,
    or the sibling of a saved child) is read from its start (TRIM_HORIZON) whatever ``kind`` says.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = Field(
        default="TRIM_HORIZON",
        description=(
            "TRIM_HORIZON: everything the stream still holds. LATEST: records arriving after the "
            "reader starts. AT_TIMESTAMP: records that arrived at or after `timestamp`."
        ),
    )
    timestamp: datetime | None = Field(
        default=None, description="AT_TIMESTAMP only: the earliest arrival time (naive means UTC)."
    )
    after_sequence: dict[str, str] = Field(
        default_factory=dict,
        description="Saved positions: shard id -> last sequence number already processed.",
    )

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("after_sequence")
    @classmethod
    def _sequence_numbers(cls, value: dict[str, str]) -> dict[str, str]:
        for shard_id, sequence in value.items():
            if not sequence.isdigit():
                raise ValueError(f"shard {shard_id}: sequence number {sequence!r} is not decimal")
        return value

    @model_validator(mode="after")
    def _timestamp_with_kind(self) -> StartPosition:
        if (self.kind == "AT_TIMESTAMP") != (self.timestamp is not None):
            raise ValueError(
                "timestamp is required with kind AT_TIMESTAMP and only allowed with it"
            )
        return self

    def start_timestamp(self, now: float) -> float | None:
        """The arrival time reading starts at, or None for TRIM_HORIZON.

        LATEST is pinned to ``now`` (the moment the reader's restriction is made) and read as
        AT_TIMESTAMP, so a reader restored from a checkpoint before its first record still starts
        where it first started, rather than at a later LATEST that skips what arrived in between.
        """
        if self.kind == "LATEST":
            return now
        if self.timestamp is not None:
            return self.timestamp.timestamp()
        return None


@dataclass(frozen=True, slots=True)
class StreamRestriction:
    """The reading position of the shards one reader reads: the whole of the SDF restriction's work.

    ``owned``: the shards this restriction reads (a lineage, grown with ``AdoptShards`` as its
    shards split or merge); None: every shard of the stream (the restriction before it is split).
    ``positions``: shard id -> last sequence number read by this reader, sorted by shard id
    (shards not listed have not produced a record yet). ``finished``: shards read to their end.
    ``start_timestamp``: where shards without a position start (None: TRIM_HORIZON; see
    ``StartPosition``). ``stopped``: this restriction holds no further work, either because it is the
    done half of a checkpoint or because the reader finished (``stop_when_idle_seconds``).

    Immutable and picklable: Beam encodes restrictions (with its default pickling coder) whenever it
    checkpoints, so the reader's position survives worker moves and restarts.
    """

    positions: tuple[tuple[str, str], ...] = ()
    finished: frozenset[str] = frozenset()
    start_timestamp: float | None = None
    stopped: bool = False
    owned: frozenset[str] | None = None

    def position_map(self) -> dict[str, str]:
        return dict(self.positions)


@dataclass(frozen=True, slots=True)
class ShardClaim:
    """A claim that one shard's batch was read: its position moves to ``sequence``.

    ``sequence`` None: no new record, only ``finished`` (a closed shard found at its end).
    """

    shard_id: str
    sequence: str | None
    finished: bool = False


@dataclass(frozen=True, slots=True)
class AdoptShards:
    """A claim that ``shards`` (children of shards the restriction reads) are read by it from now on."""

    shards: frozenset[str]


@dataclass(frozen=True, slots=True)
class StopReading:
    """A claim of the end of the restriction: the reader finishes (stop-when-idle)."""


STOP_READING: Final = StopReading()
