"""Read an Amazon Kinesis data stream into Beam, in pure Python: one element per GetRecords call.

In: a stream name and where to start (``StartPosition``: TRIM_HORIZON, LATEST or AT_TIMESTAMP, plus
saved per-shard sequence numbers to resume after), read through boto3 (endpoint, region and
credentials from the standard AWS environment, e.g. ``AWS_ENDPOINT_URL``).
Out: ``SourceBatch`` elements, one per GetRecords call that returned records, each holding that
call's records de-aggregated (KPL) into ``SourceRecord`` values in shard order. A batch names the
last sequence number of the previous batch of its shard (``previous_sequence``), so a sink can commit
positions only where everything before them was written. Element timestamp: the batch's latest
arrival time. The output watermark is the arrival-time progress of the slowest open shard, where a
caught-up shard counts as "now minus a margin" so an idle shard never holds it back.

Nothing becomes a dead letter here: record bytes pass on untouched (a KPL aggregate that does not
parse passes on whole, see ``sluice.stream.kpl``) and the parse stage dead-letters what it cannot decode.
What retries cannot fix (stream missing, access denied, throttled beyond the retry budget) raises
``KinesisReadError``, failing the bundle so the runner retries from its last checkpoint.

Why this shape: Beam Python's own Kinesis IO is a Java cross-language transform (jars, Docker). Here
one splittable-DoFn element reads a whole stream. Its restriction (``StreamRestriction``) holds the
last sequence number read from every shard and the shards read to their end, so a checkpoint is
exact, resharding keeps order (a child shard is read only after its parents), and the source emits
batches, not records, because Python pays per element.
"""

# Beam's Python API is only partly typed; calls into it would otherwise each need an ignore.
# mypy: disable-error-code="no-untyped-call,untyped-decorator"

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import apache_beam as beam
import boto3
import botocore.session
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.utils import parse_timestamp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from beam_jobs.metrics import StageCounters
from sluice.core.aws_errors import aws_error, aws_error_code, retry_class
from sluice.core.config import config_error
from sluice.core.contracts import Stage
from sluice.core.errors import SluiceError
from sluice.core.retry import BackoffPolicy
from sluice.stream.kpl import deaggregate

__all__ = [
    "MIN_CALL_INTERVAL_SECONDS",
    "STOP_READING",
    "Backoff",
    "KinesisReadError",
    "KinesisReadSettings",
    "KinesisStreamReader",
    "ReadFromKinesis",
    "ShardClaim",
    "ShardInfo",
    "SourceBatch",
    "SourceRecord",
    "StartPosition",
    "StopReading",
    "StreamRestriction",
    "StreamRestrictionTracker",
    "ancestors",
    "build_batch",
    "failure_kind",
    "iterator_request",
    "readable_shards",
    "retry_policy",
    "stream_watermark",
]

_LOG = logging.getLogger(__name__)

MIN_CALL_INTERVAL_SECONDS: Final = 0.2
"""Kinesis allows 5 GetRecords calls per second per shard; calls to one shard start at least this far apart."""

_EXPIRED_ITERATOR: Final = "ExpiredIteratorException"
_MAX_IDLE_SLEEP_SECONDS: Final = 1.0
"""Longest wait inside one ``process`` call: short calls let the runner checkpoint between them."""


class KinesisReadError(SluiceError):
    """Reading the stream failed in a way retries cannot fix (or retries ran out); the message says where."""


# Elements ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One user record as the producer wrote it, with where and when it landed in Kinesis."""

    sequence_number: str
    """Sequence number of the Kinesis record carrying it (shared by a KPL aggregate's records)."""
    sub_sequence: int
    """Index within a KPL aggregate; 0 for a plain record."""
    arrival: float
    """ApproximateArrivalTimestamp of the Kinesis record, epoch seconds."""
    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """The records of one GetRecords call on one shard, in shard order (never empty of Kinesis records)."""

    stream: str
    shard_id: str
    records: tuple[SourceRecord, ...]
    first_sequence: str
    last_sequence: str
    previous_sequence: str | None
    """``last_sequence`` of the previous batch of this shard in this reader run; None for the first."""
    max_arrival: float
    millis_behind_latest: int


def _epoch_seconds(value: Any) -> float:
    # Kinesis sends epoch seconds; the reader's client keeps them raw (see ``_kinesis_client``),
    # other clients hand over datetimes, and an ISO string is parsed as botocore would.
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return float(parse_timestamp(value).timestamp())


def build_batch(
    stream: str,
    shard_id: str,
    kinesis_records: Iterable[Mapping[str, Any]],
    previous_sequence: str | None,
    millis_behind_latest: int,
) -> SourceBatch | None:
    """The batch of one GetRecords response's ``Records`` (KPL aggregates unpacked); None when empty."""
    records: list[SourceRecord] = []
    first = last = None
    max_arrival = float("-inf")
    for record in kinesis_records:
        sequence: str = record["SequenceNumber"]
        arrival = _epoch_seconds(record["ApproximateArrivalTimestamp"])
        first = first or sequence
        last = sequence
        max_arrival = max(max_arrival, arrival)
        records.extend(
            SourceRecord(sequence, index, arrival, user.partition_key, user.data)
            for index, user in enumerate(deaggregate(record["Data"], record["PartitionKey"]))
        )
    if first is None or last is None:
        return None
    return SourceBatch(
        stream=stream,
        shard_id=shard_id,
        records=tuple(records),
        first_sequence=first,
        last_sequence=last,
        previous_sequence=previous_sequence,
        max_arrival=max_arrival,
        millis_behind_latest=millis_behind_latest,
    )


# Configuration -------------------------------------------------------------------------------------


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


class KinesisReadSettings(BaseModel):
    """Everything ``ReadFromKinesis`` needs; invalid values stop the pipeline at construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_name: str = Field(
        min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.-]+$", description="Stream to read."
    )
    start: StartPosition = Field(default_factory=StartPosition, description="Where to start.")
    max_records_per_call: int = Field(
        default=10_000, ge=1, le=10_000, description="GetRecords Limit (Kinesis allows 10,000)."
    )
    poll_interval_seconds: float = Field(
        default=0.2,
        gt=0,
        le=60,
        description=(
            "Wait between polls of a caught-up shard. A shard that is behind is polled again as "
            "soon as Kinesis' 5 calls/s per shard allow; calls are never closer than 0.2 s."
        ),
    )
    bundle_seconds: float = Field(
        default=0.0,
        ge=0,
        le=3_600,
        description=(
            "Keep polling for this long within one process call (one bundle) before deferring. "
            "Downstream writers commit once per bundle, so this is the commit interval; "
            "0: one round of polls per bundle."
        ),
    )
    stop_when_idle_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Finish once every shard is caught up and no record arrived for this long (ends a "
            "streaming pipeline: tests, `--stop-when-idle`). None: read forever."
        ),
    )
    max_retries: int = Field(
        default=8,
        ge=0,
        le=100,
        description="Throttled or failed calls retried in a row per shard before KinesisReadError.",
    )
    backoff_base_seconds: float = Field(
        default=0.1, gt=0, description="First retry waits up to this long (full jitter)."
    )
    backoff_cap_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait between retries; waits double up to it."
    )
    discovery_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often ListShards looks for new shards (resharding)."
    )
    watermark_margin_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "A caught-up shard's watermark is the poll's wall-clock time minus this, allowing for "
            "records that arrived just before the poll but were not yet visible to it."
        ),
    )
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="botocore connect timeout."
    )
    read_timeout_seconds: float = Field(default=10.0, gt=0, description="botocore read timeout.")
    region_name: str | None = Field(
        default=None, description="AWS region; None: from the environment (AWS_DEFAULT_REGION...)."
    )


# Restriction and tracker ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRestriction:
    """The reading position of every shard of one stream: the whole of the SDF element's work.

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
class StopReading:
    """A claim of the end of the restriction: the reader finishes (stop-when-idle)."""


STOP_READING: Final = StopReading()


class StreamRestrictionTracker(RestrictionTracker):
    """Tracks claims against a ``StreamRestriction``; splits only to checkpoint.

    A stream's shards are read by one element in order (parents before children), so there is no
    useful way to hand part of the work to another worker: ``try_split`` with a fraction above 0
    declines. ``try_split(0)`` (a checkpoint, also what ``defer_remainder`` asks for) returns the
    done part, ``stopped``, and the rest from the current positions; later claims fail, so the
    ``process`` call must return. ``check_done`` passes only once the restriction is stopped, which
    catches a ``process`` call that returns without deferring or claiming the end.
    """

    def __init__(self, restriction: StreamRestriction) -> None:
        self._start = restriction
        self._positions = restriction.position_map()
        self._finished = set(restriction.finished)
        self._stopped = restriction.stopped
        self._claims = 0

    def _snapshot(self, *, stopped: bool) -> StreamRestriction:
        return StreamRestriction(
            positions=tuple(sorted(self._positions.items())),
            finished=frozenset(self._finished),
            start_timestamp=self._start.start_timestamp,
            stopped=stopped,
        )

    def current_restriction(self) -> StreamRestriction:
        return self._snapshot(stopped=self._stopped)

    def try_claim(self, position: ShardClaim | StopReading) -> bool:
        if self._stopped:
            return False
        if isinstance(position, StopReading):
            self._stopped = True
            return True
        shard = position.shard_id
        if shard in self._finished:
            raise ValueError(f"shard {shard} was already read to its end")
        if position.sequence is not None:
            previous = self._positions.get(shard)
            # Sequence numbers grow within a shard; a claim that does not move forward would emit
            # records twice, which is a bug in the reader, not something to carry on from.
            if previous is not None and int(position.sequence) <= int(previous):
                raise ValueError(
                    f"shard {shard}: claim {position.sequence} is not after {previous}"
                )
            self._positions[shard] = position.sequence
        if position.finished:
            self._finished.add(shard)
        self._claims += 1
        return True

    def try_split(
        self, fraction_of_remainder: float
    ) -> tuple[StreamRestriction, StreamRestriction] | None:
        if self._stopped or fraction_of_remainder > 0:
            return None
        residual = self._snapshot(stopped=False)
        self._stopped = True
        return self._snapshot(stopped=True), residual

    def check_done(self) -> None:
        if not self._stopped:
            raise ValueError(
                "StreamRestriction not done: process() returned without defer_remainder() "
                "or claiming the end"
            )

    def is_bounded(self) -> bool:
        # Unbounded until stopped; used when draining (truncate), where an unbounded restriction
        # is dropped at its last checkpoint.
        return self._stopped

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(
            completed=float(self._claims), remaining=0.0 if self._stopped else 1.0
        )


# Pure rules ----------------------------------------------------------------------------------------


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


def failure_kind(error: Exception) -> Literal["throttled", "transient"] | None:
    """How a failed AWS call may be retried: throttled, transient (5xx, connection), or not at all."""
    found = aws_error(error)
    if found is not None:
        # An expired iterator is refreshed at once on the first expiry; a fresh one expiring again
        # is retried later.
        if found.code == _EXPIRED_ITERATOR:
            return "transient"
        return retry_class(found.code, found.status)
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return "transient"
    return None


def _describe(error: Exception) -> str:
    found = aws_error(error)
    if found is not None:
        return str(found)
    return f"{type(error).__name__}: {error}"


def retry_policy(settings: KinesisReadSettings) -> BackoffPolicy:
    """The reader's retries of one shard or call: the project's backoff (``sluice.core.retry``), bounded
    by ``max_retries`` retries in a row; no time bound (a failing read fails the bundle soon enough)."""
    return BackoffPolicy.capped(
        settings.backoff_base_seconds,
        settings.backoff_cap_seconds,
        max_attempts=settings.max_retries + 1,
        max_elapsed_seconds=math.inf,
    )


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait after ``attempt`` failures in a row (1: the first), uniformly up to
    ``min(cap, base * 2**(attempt-1))``: ``sluice.core.retry.BackoffPolicy``, under its former name here."""

    base_seconds: float
    cap_seconds: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        return BackoffPolicy.capped(self.base_seconds, self.cap_seconds).backoff(attempt - 1, rng)


# The reader ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ShardState:
    """What the reader remembers about a shard between polls; none of it is needed for correctness."""

    iterator: str | None = None
    iterator_after: str | None = None
    """The position ``iterator`` continues from; a cached iterator is used only at that position."""
    next_poll_at: float = 0.0
    failures: int = 0
    progress: float | None = None
    caught_up: bool = False


@dataclass(frozen=True, slots=True)
class _Fetched:
    records: list[dict[str, Any]]
    millis_behind_latest: int
    finished: bool
    polled_at: float


Claim = Callable[[ShardClaim], bool]


class KinesisStreamReader:
    """Reads one stream in rounds: each round polls every due shard once; Beam-free apart from counters.

    The restriction is the truth about positions; this object only caches what makes reading cheap
    (shard listing, shard iterators, per-shard pacing) and what the watermark and idle decisions
    need. A cached iterator is used only when it continues from the restriction's position, so after
    a failed claim or a restore the reader simply asks Kinesis for a fresh one.
    """

    def __init__(
        self,
        client: Any,
        settings: KinesisReadSettings,
        *,
        counters: StageCounters | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._stream = settings.stream_name
        self._counters = counters or StageCounters(Stage.READ)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._retry = retry_policy(settings)
        self._shards: dict[str, ShardInfo] = {}
        self._saved_ancestors: set[str] = set()
        self._after_saved: set[str] = set()
        self._state: dict[str, _ShardState] = {}
        self._finished: set[str] = set()
        self._discovered_at: float | None = None
        self._rediscover = True
        self._last_record_at: float | None = None

    # Rounds ------------------------------------------------------------------------------------

    def read_round(self, restriction: StreamRestriction, claim: Claim) -> Iterator[SourceBatch]:
        """Poll each shard that is due once; claim, then yield, each batch. Stops at a failed claim."""
        now = self._clock()
        if self._last_record_at is None:
            self._last_record_at = now  # idle time counts from the first round
        positions = restriction.position_map()
        self._finished = set(restriction.finished)
        if (
            self._rediscover
            or now - (self._discovered_at or 0.0) >= self._settings.discovery_interval_seconds
        ):
            self._discover()
        for shard_id in self._due_shards():
            fetched = self._fetch(shard_id, positions.get(shard_id), restriction.start_timestamp)
            if fetched is None:
                continue  # throttled or failed: retried at the shard's next poll
            batch = build_batch(
                self._stream,
                shard_id,
                fetched.records,
                positions.get(shard_id),
                fetched.millis_behind_latest,
            )
            if batch is not None or fetched.finished:
                sequence = batch.last_sequence if batch is not None else None
                if not claim(ShardClaim(shard_id, sequence, fetched.finished)):
                    return  # the runner checkpointed: the rest is read after the restore
                if sequence is not None:
                    positions[shard_id] = sequence
            self._after_poll(shard_id, fetched, batch)
            if batch is not None:
                self._counters.count("batches")
                self._counters.count("records", len(batch.records))
                self._counters.count("kinesis_records", len(fetched.records))
                self._counters.observe("millis_behind_latest", batch.millis_behind_latest)
                yield batch

    def watermark(self) -> float | None:
        """Epoch seconds no future batch is expected to arrive before (slowest open shard)."""
        return stream_watermark(self._state_of(s).progress for s in self._open_shards())

    def should_stop(self) -> bool:
        """True when the reader should finish: enabled, every shard caught up, no record for long enough.

        Only a shard listing taken after the last record counts: a reshard during the idle time
        would otherwise go unseen, so a stale listing triggers one more discovery instead.
        """
        idle_seconds = self._settings.stop_when_idle_seconds
        if idle_seconds is None or self._last_record_at is None:
            return False
        if not all(self._state_of(s).caught_up for s in self._open_shards()):
            return False
        if self._clock() - self._last_record_at < idle_seconds:
            return False
        if self._discovered_at is None or self._discovered_at < self._last_record_at + idle_seconds:
            self._rediscover = True
            return False
        return True

    def close(self) -> None:
        self._client.close()

    def seconds_until_next_poll(self) -> float:
        due = [self._state_of(s).next_poll_at for s in self._open_shards()]
        return max(0.0, min(due, default=0.0) - self._clock())

    # Shards ------------------------------------------------------------------------------------

    def _open_shards(self) -> list[str]:
        return readable_shards(self._shards, self._finished | self._saved_ancestors)

    def _due_shards(self) -> list[str]:
        """Shards due for a poll, after waiting (briefly) for the first one if none is due yet.

        Waiting here rather than only through ``defer_remainder`` matters because local runners
        (FnApiRunner) resume a deferred element at once, whatever delay was asked for.
        """
        shards = self._open_shards()
        if not shards:
            self._sleep(min(self._settings.poll_interval_seconds, _MAX_IDLE_SLEEP_SECONDS))
            return []
        wait = min(self._state_of(s).next_poll_at for s in shards) - self._clock()
        if wait > 0:
            self._sleep(min(wait, _MAX_IDLE_SLEEP_SECONDS))
        now = self._clock()
        return [s for s in shards if self._state_of(s).next_poll_at <= now]

    def _discover(self) -> None:
        shards: dict[str, ShardInfo] = {}
        request: dict[str, Any] = {"StreamName": self._stream}
        while True:
            response = self._with_retries(
                "ListShards", functools.partial(self._client.list_shards, **request)
            )
            for shard in response.get("Shards", []):
                info = ShardInfo.from_response(shard)
                shards[info.shard_id] = info
            token = response.get("NextToken")
            if not token:
                break
            request = {"NextToken": token}  # ListShards refuses StreamName together with NextToken
        if set(shards) != set(self._shards):
            _LOG.info("stream %s: shards %s", self._stream, ", ".join(sorted(shards)))
        self._shards = shards
        # Saved positions say more than where their shards resume: their ancestors were read to
        # the end (children are read only after their parents), and any other shard descending
        # from those ancestors or from a saved shard was born after reading reached it, so it is
        # read from its start whatever the start kind (a sibling the saver had not reached yet).
        saved = set(self._settings.start.after_sequence)
        self._saved_ancestors = ancestors(saved, shards) - saved
        covered = saved | self._saved_ancestors
        self._after_saved = {
            s for s in shards if s not in covered and ancestors([s], shards) & covered
        }
        self._discovered_at = self._clock()
        self._rediscover = False
        for gone in set(self._state) - set(shards):
            del self._state[gone]

    def _state_of(self, shard_id: str) -> _ShardState:
        state = self._state.get(shard_id)
        if state is None:
            state = self._state[shard_id] = _ShardState()
        return state

    # Calls -------------------------------------------------------------------------------------

    def _fetch(
        self, shard_id: str, position: str | None, start_timestamp: float | None
    ) -> _Fetched | None:
        state = self._state_of(shard_id)
        started = self._clock()
        polled_at = self._wall_clock()
        try:
            try:
                response = self._client.get_records(
                    ShardIterator=self._iterator(shard_id, position, start_timestamp, state),
                    Limit=self._settings.max_records_per_call,
                )
            except ClientError as error:
                if aws_error_code(error) != _EXPIRED_ITERATOR:
                    raise
                # Iterators live five minutes; a fresh one from the same position loses nothing.
                self._counters.count("iterators_expired")
                state.iterator = None
                response = self._client.get_records(
                    ShardIterator=self._iterator(shard_id, position, start_timestamp, state),
                    Limit=self._settings.max_records_per_call,
                )
        except (ClientError, BotoCoreError) as error:
            self._retry_later(shard_id, state, error)
            return None
        records: list[dict[str, Any]] = response.get("Records", [])
        behind = int(response.get("MillisBehindLatest", 0))
        next_iterator = response.get("NextShardIterator")
        state.failures = 0
        state.iterator = next_iterator
        state.iterator_after = records[-1]["SequenceNumber"] if records else position
        # Kinesis ends a closed shard with no next iterator. Emulators (moto) keep handing out
        # iterators, so a shard the listing shows closed also ends when a poll finds it drained.
        finished = next_iterator is None or (
            self._shards[shard_id].closed and not records and behind == 0
        )
        if response.get("ChildShards") or finished:
            self._rediscover = True
        more_waiting = behind > 0 or len(records) >= self._settings.max_records_per_call
        interval = 0.0 if more_waiting else self._settings.poll_interval_seconds
        state.next_poll_at = started + max(interval, MIN_CALL_INTERVAL_SECONDS)
        return _Fetched(records, behind, finished, polled_at)

    def _iterator(
        self, shard_id: str, position: str | None, start_timestamp: float | None, state: _ShardState
    ) -> str:
        if state.iterator is not None and state.iterator_after == position:
            return state.iterator
        request = iterator_request(
            shard_id,
            position,
            self._settings.start,
            start_timestamp,
            after_saved_shard=shard_id in self._after_saved,
        )
        iterator: str = self._client.get_shard_iterator(
            StreamName=self._stream, ShardId=shard_id, **request
        )["ShardIterator"]
        state.iterator, state.iterator_after = iterator, position
        return iterator

    def _after_poll(self, shard_id: str, fetched: _Fetched, batch: SourceBatch | None) -> None:
        state = self._state_of(shard_id)
        if fetched.finished:
            _LOG.info("stream %s: shard %s read to its end", self._stream, shard_id)
            self._finished.add(shard_id)
            self._state.pop(shard_id, None)
            return
        if batch is not None:
            self._last_record_at = self._clock()
            state.caught_up = False
            state.progress = max(state.progress or batch.max_arrival, batch.max_arrival)
        elif fetched.millis_behind_latest == 0:
            state.caught_up = True
            idle_progress = fetched.polled_at - self._settings.watermark_margin_seconds
            state.progress = max(state.progress or idle_progress, idle_progress)
        else:
            state.caught_up = False  # an empty page in the middle of the shard: keep reading

    def _count_failure(self, error: Exception) -> Literal["throttled", "transient"] | None:
        kind = failure_kind(error)
        if kind == "throttled":
            self._counters.count("throttled")
        elif kind == "transient":
            self._counters.count("transient_errors")
        return kind

    def _retry_later(self, shard_id: str, state: _ShardState, error: Exception) -> None:
        if self._count_failure(error) is None:
            raise KinesisReadError(
                f"reading shard {shard_id} of stream {self._stream} failed: {_describe(error)}"
            ) from error
        state.failures += 1
        _LOG.debug(
            "stream %s shard %s: retry %d after %s",
            self._stream,
            shard_id,
            state.failures,
            _describe(error),
        )
        delay = self._retry.next_delay(state.failures, 0.0, self._rng)
        if delay is None:
            raise KinesisReadError(
                f"reading shard {shard_id} of stream {self._stream} failed {state.failures} times "
                f"in a row, last: {_describe(error)}; giving up (max_retries="
                f"{self._settings.max_retries})"
            ) from error
        # The cached iterator (if any) stays: a throttled GetRecords leaves it valid, and a
        # failed GetShardIterator never cached one.
        state.next_poll_at = self._clock() + delay

    def _with_retries(self, operation: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return call()
            except (ClientError, BotoCoreError) as error:
                attempt += 1
                retryable = self._count_failure(error) is not None
                delay = self._retry.next_delay(attempt, 0.0, self._rng) if retryable else None
                if delay is None:
                    raise KinesisReadError(
                        f"{operation} on stream {self._stream} failed after {attempt} attempt(s): "
                        f"{_describe(error)}"
                    ) from error
                self._sleep(delay)


# Beam ----------------------------------------------------------------------------------------------


def _raw_timestamp(value: Any) -> Any:
    return value


def _kinesis_client(settings: KinesisReadSettings) -> Any:
    # botocore turns every ApproximateArrivalTimestamp into a datetime in the local time zone
    # (dateutil's tzlocal), about a third of the client's time per record when records are small;
    # the raw epoch number is all a batch needs (``_epoch_seconds`` still accepts anything else).
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_raw_timestamp
    )
    config = Config(
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        # One attempt per call: the reader retries itself, per shard and without blocking the
        # others, and counts throttling; botocore's own retries would hide both.
        retries={"total_max_attempts": 1},
    )
    return boto3.session.Session(botocore_session=session).client(
        "kinesis", region_name=settings.region_name, config=config
    )


_RESTRICTION_PARAM: Final = beam.DoFn.RestrictionParam()
"""No provider given: the DoFn is its own RestrictionProvider."""
_WATERMARK_PARAM: Final = beam.DoFn.WatermarkEstimatorParam(
    ManualWatermarkEstimator.default_provider()
)


class _ReadStreamFn(beam.DoFn, RestrictionProvider):
    """The splittable DoFn: element = stream name, restriction = ``StreamRestriction``.

    It is its own RestrictionProvider because the initial restriction depends on the settings
    (LATEST is pinned to the time the restriction is made).
    """

    def __init__(self, settings: KinesisReadSettings) -> None:
        self._settings = settings
        self._reader: KinesisStreamReader | None = None
        self._counters = StageCounters(Stage.READ)

    # RestrictionProvider -----------------------------------------------------------------------

    def initial_restriction(self, element: str) -> StreamRestriction:
        return StreamRestriction(start_timestamp=self._settings.start.start_timestamp(time.time()))

    def create_tracker(self, restriction: StreamRestriction) -> StreamRestrictionTracker:
        return StreamRestrictionTracker(restriction)

    def split(self, element: str, restriction: StreamRestriction) -> Iterator[StreamRestriction]:
        yield restriction  # one element reads every shard, in parent-before-child order

    def restriction_size(self, element: str, restriction: StreamRestriction) -> float:
        return 0.0 if restriction.stopped else 1.0

    # DoFn --------------------------------------------------------------------------------------

    def setup(self) -> None:
        self._reader = KinesisStreamReader(
            _kinesis_client(self._settings), self._settings, counters=self._counters
        )

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: str,
        tracker: Any = _RESTRICTION_PARAM,
        watermark: Any = _WATERMARK_PARAM,
    ) -> Iterator[TimestampedValue[SourceBatch]]:
        if element != self._settings.stream_name:
            raise ValueError(f"element {element!r} is not the configured stream")
        reader = self._reader
        assert reader is not None, "setup() creates the reader"
        claims_failed = False

        def claim(shard_claim: ShardClaim) -> bool:
            nonlocal claims_failed
            claimed: bool = tracker.try_claim(shard_claim)
            claims_failed = claims_failed or not claimed
            return claimed

        deadline = time.monotonic() + self._settings.bundle_seconds
        finished = False
        while not finished:
            for batch in reader.read_round(tracker.current_restriction(), claim):
                yield TimestampedValue(batch, batch.max_arrival)
            # No early `return` here: Beam warns about generators that both yield and return (#22969).
            if claims_failed:  # the runner took the rest of the restriction as a checkpoint
                break
            self._advance_watermark(reader, watermark)
            if reader.should_stop():
                tracker.try_claim(STOP_READING)
                finished = True
            elif time.monotonic() >= deadline:
                tracker.defer_remainder(Duration.of(reader.seconds_until_next_poll()))
                finished = True

    def _advance_watermark(self, reader: KinesisStreamReader, watermark: Any) -> None:
        progress = reader.watermark()
        if progress is None:
            return
        current = watermark.current_watermark()
        candidate = Timestamp.of(progress)
        # Progress can sit below the estimator's watermark after a restore (the new reader has
        # not polled every shard yet); a watermark never moves back, so it just waits.
        if current is None or candidate > current:
            watermark.set_watermark(candidate)
            self._counters.observe("watermark_ms", int(progress * 1000))


class ReadFromKinesis(beam.PTransform[beam.pvalue.PBegin, beam.pvalue.PCollection[SourceBatch]]):
    """``p | "ReadFromKinesis" >> ReadFromKinesis(stream_name="events", start=StartPosition(...))``.

    Produces an unbounded ``PCollection[SourceBatch]`` (bounded in practice with
    ``stop_when_idle_seconds``). Keyword arguments are the fields of ``KinesisReadSettings``;
    an invalid one raises ``ConfigError`` here, at pipeline construction.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        try:
            self._settings = KinesisReadSettings(**settings)
        except ValidationError as error:
            raise config_error(error, prefix="ReadFromKinesis") from None

    @property
    def settings(self) -> KinesisReadSettings:
        return self._settings

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.PCollection[SourceBatch]:
        batches: beam.pvalue.PCollection[SourceBatch] = (
            pbegin
            | "Stream" >> beam.Create([self._settings.stream_name])
            | "ReadShards" >> beam.ParDo(_ReadStreamFn(self._settings))
        )
        return batches
