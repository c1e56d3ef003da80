"""Read one Kinesis stream in rounds of polls, engine-free: the reader a runtime's source drives.

In: a Kinesis client (``KinesisClient``: ListShards, GetShardIterator, GetRecords), the read's
``KinesisReadSettings``, and per round the current ``StreamRestriction`` and a claim function.
Out: ``SourceBatch`` values (``sluice.stream.kinesis.records``), each claimed (``ShardClaim``) just
before it is yielded; the read's watermark; whether to stop (stop-when-idle); counts of what it
read and retried (``records``, ``throttled``...) through the ``Counters`` it is given (the Beam job
reports them as ``read.<name>``).

Dead letters: none; records pass on untouched. What retries cannot fix (stream missing, access
denied, throttled beyond the retry budget) raises ``KinesisReadError``, failing the caller's work
so its runtime retries from its last checkpoint.

Why engine- and SDK-free: the restriction is the truth about positions, and the claims move it, so
a reader that caches only what makes reading cheap (shard listing, iterators, pacing) can serve any
runtime (``beam_jobs.read_kinesis``'s splittable DoFn is one). The runtime makes the client and
names its SDK's exceptions (``ClientErrors``); service errors are read from their responses
(``sluice.core.aws_errors``).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from sluice.core.aws_errors import aws_error, aws_error_code
from sluice.stream.kinesis.failures import (
    EXPIRED_ITERATOR,
    ClientErrors,
    KinesisReadError,
    failure_kind,
    retry_policy,
)
from sluice.stream.kinesis.positions import AdoptShards, ShardClaim, StreamRestriction
from sluice.stream.kinesis.records import SourceBatch, build_batch
from sluice.stream.kinesis.settings import KinesisReadSettings
from sluice.stream.kinesis.shards import (
    ShardInfo,
    adopted_shards,
    ancestors,
    iterator_request,
    readable_shards,
    stream_watermark,
)

__all__ = ["KinesisClient", "KinesisStreamReader"]

_LOG = logging.getLogger(__name__)

MIN_CALL_INTERVAL_SECONDS: Final = 0.2
"""Kinesis allows 5 GetRecords calls per second per shard; calls to one shard start at least this far apart."""

_MAX_IDLE_SLEEP_SECONDS: Final = 1.0
"""Longest wait inside one ``process`` call: short calls let the runner checkpoint between them."""


class KinesisClient(Protocol):
    """The Kinesis calls the reader makes, as boto3's ``kinesis`` client offers them."""

    def list_shards(self, **request: Any) -> Mapping[str, Any]:
        """ListShards with ``StreamName``, or with ``NextToken`` alone for the next page."""
        ...

    def get_shard_iterator(
        self, *, StreamName: str, ShardId: str, ShardIteratorType: str, **position: Any
    ) -> Mapping[str, Any]: ...

    def get_records(self, *, ShardIterator: str, Limit: int) -> Mapping[str, Any]: ...

    def close(self) -> None: ...


class Counters(Protocol):
    """Where the reader counts (``beam_jobs.metrics.StageCounters`` in the Beam job)."""

    def count(self, name: str, n: int = 1) -> None: ...

    def observe(self, name: str, value: int) -> None: ...


class _NoCounters:
    """Counts nowhere: the reader's default when its runtime keeps no counters."""

    def count(self, name: str, n: int = 1) -> None:
        pass

    def observe(self, name: str, value: int) -> None:
        pass


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


Claim = Callable[[ShardClaim | AdoptShards], bool]
"""Claims a shard's batch against the runtime's restriction; False: stop, the runtime checkpointed."""


class KinesisStreamReader:
    """Reads one stream, or one lineage of its shards, in rounds: each round polls every due shard once.

    Which shards: those the restriction owns (``StreamRestriction.owned``; None: all). Children of
    owned shards are claimed for the restriction (``AdoptShards``) as the listing shows them.

    ``errors`` names the client's exceptions (see ``ClientErrors``); ``counters`` receives the
    read's counts (by default they go nowhere); ``clock``, ``wall_clock``, ``sleep`` and ``rng``
    are there for tests.

    The restriction is the truth about positions; this object only caches what makes reading cheap
    (shard listing, shard iterators, per-shard pacing) and what the watermark and idle decisions
    need. A cached iterator is used only when it continues from the restriction's position, so after
    a failed claim or a restore the reader simply asks Kinesis for a fresh one.
    """

    def __init__(
        self,
        client: KinesisClient,
        settings: KinesisReadSettings,
        *,
        errors: ClientErrors,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._stream = settings.stream_name
        self._network_errors = errors.network
        self._failed_call = (*errors.failed_call, *errors.network)
        self._counters: Counters = counters if counters is not None else _NoCounters()
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
        self._owned: frozenset[str] | None = None
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
        self._owned = restriction.owned
        if (
            self._rediscover
            or now - (self._discovered_at or 0.0) >= self._settings.discovery_interval_seconds
        ):
            self._discover()
        if self._owned is not None:
            adopted = adopted_shards(self._owned, self._shards)
            if adopted:
                if not claim(AdoptShards(adopted)):
                    return
                _LOG.info(
                    "stream %s: reading new shards %s", self._stream, ", ".join(sorted(adopted))
                )
                self._owned = self._owned | adopted
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

    def exhausted(self) -> bool:
        """True when a lineage's reader has nothing left: every shard it owns read to its end, and
        a listing taken since shows no child to adopt. Never for the whole stream (``owned`` None)."""
        if self._owned is None or self._rediscover or self._discovered_at is None:
            return False
        done = self._finished | self._saved_ancestors
        return all(s in done for s in self._owned if s in self._shards) and not adopted_shards(
            self._owned, self._shards
        )

    def close(self) -> None:
        self._client.close()

    def seconds_until_next_poll(self) -> float:
        due = [self._state_of(s).next_poll_at for s in self._open_shards()]
        return max(0.0, min(due, default=0.0) - self._clock())

    # Shards ------------------------------------------------------------------------------------

    def _open_shards(self) -> list[str]:
        return readable_shards(self._shards, self._finished | self._saved_ancestors, self._owned)

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

    def list_shards(self) -> dict[str, ShardInfo]:
        """The stream's shards as ListShards lists them now (all pages, with retries)."""
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
        return shards

    def _discover(self) -> None:
        shards = self.list_shards()
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
            except self._failed_call as error:
                if aws_error_code(error) != EXPIRED_ITERATOR:
                    raise
                # Iterators live five minutes; a fresh one from the same position loses nothing.
                self._counters.count("iterators_expired")
                state.iterator = None
                response = self._client.get_records(
                    ShardIterator=self._iterator(shard_id, position, start_timestamp, state),
                    Limit=self._settings.max_records_per_call,
                )
        except self._failed_call as error:
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
        kind = failure_kind(error, self._network_errors)
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

    def _with_retries(
        self, operation: str, call: Callable[[], Mapping[str, Any]]
    ) -> Mapping[str, Any]:
        attempt = 0
        while True:
            try:
                return call()
            except self._failed_call as error:
                attempt += 1
                retryable = self._count_failure(error) is not None
                delay = self._retry.next_delay(attempt, 0.0, self._rng) if retryable else None
                if delay is None:
                    raise KinesisReadError(
                        f"{operation} on stream {self._stream} failed after {attempt} attempt(s): "
                        f"{_describe(error)}"
                    ) from error
                self._sleep(delay)


def _describe(error: Exception) -> str:
    found = aws_error(error)
    if found is not None:
        return str(found)
    return f"{type(error).__name__}: {error}"
