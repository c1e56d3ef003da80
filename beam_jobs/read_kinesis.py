"""Read an Amazon Kinesis data stream into Beam, in pure Python: one element per GetRecords call.

In: a stream name and where to start (``StartPosition``: TRIM_HORIZON, LATEST or AT_TIMESTAMP, plus
saved per-shard sequence numbers to resume after), read through boto3 (endpoint, region and
credentials from the standard AWS environment, e.g. ``AWS_ENDPOINT_URL``; see
``beam_jobs.kinesis_client``).
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
one splittable-DoFn element stands for the stream; its initial restriction is split into one
restriction per shard *lineage* (shards linked by splits and merges, ``sluice.stream.kinesis.shards
.lineages``), which the runner reads in parallel (Flink: one per parallel instance; the FnApiRunner
with ``direct_num_workers``). A restriction (``StreamRestriction``) holds the last sequence number
read from each of its shards and those read to their end, so a checkpoint is exact; it follows its
lineage's resharding itself (a child shard is read only after its parents, and children found at
run time join it), and the source emits batches, not records, because Python pays per element.

Only the Beam parts live here: the restriction tracker, the splittable DoFn and the ``PTransform``.
The element types, positions, settings, shard rules and the reader itself are engine-free, in
``sluice.stream.kinesis``.
"""

# Beam's Python API is only partly typed; calls into it would otherwise each need an ignore.
# mypy: disable-error-code="no-untyped-call,untyped-decorator"

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

import apache_beam as beam
from apache_beam.coders import Coder
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from pydantic import ValidationError

from beam_jobs.kinesis_client import BOTOCORE_ERRORS, kinesis_client
from beam_jobs.metrics import StageCounters
from sluice.core.config import config_error
from sluice.core.contracts import Stage
from sluice.stream.kinesis.positions import (
    STOP_READING,
    AdoptShards,
    ShardClaim,
    StopReading,
    StreamRestriction,
)
from sluice.stream.kinesis.reader import KinesisClient, KinesisStreamReader
from sluice.stream.kinesis.records import SourceBatch
from sluice.stream.kinesis.settings import KinesisReadSettings
from sluice.stream.kinesis.shards import ShardInfo, lineages

__all__ = ["ReadFromKinesis", "StreamRestrictionTracker"]


class StreamRestrictionTracker(RestrictionTracker):
    """Tracks claims against a ``StreamRestriction``; splits only to checkpoint.

    A lineage's shards are read by one restriction in order (parents before children), so there is
    no useful way to hand part of it to another worker: ``try_split`` with a fraction above 0
    declines (the parallel work is the lineages, made by the initial ``split``). ``try_split(0)`` (a checkpoint, also what ``defer_remainder`` asks for) returns the
    done part, ``stopped``, and the rest from the current positions; later claims fail, so the
    ``process`` call must return. ``check_done`` passes only once the restriction is stopped, which
    catches a ``process`` call that returns without deferring or claiming the end.
    """

    def __init__(self, restriction: StreamRestriction) -> None:
        self._start = restriction
        self._positions = restriction.position_map()
        self._finished = set(restriction.finished)
        self._stopped = restriction.stopped
        self._owned = restriction.owned
        self._claims = 0

    def _snapshot(self, *, stopped: bool) -> StreamRestriction:
        return StreamRestriction(
            positions=tuple(sorted(self._positions.items())),
            finished=frozenset(self._finished),
            start_timestamp=self._start.start_timestamp,
            stopped=stopped,
            owned=self._owned,
        )

    def current_restriction(self) -> StreamRestriction:
        return self._snapshot(stopped=self._stopped)

    def try_claim(self, position: ShardClaim | AdoptShards | StopReading) -> bool:
        if self._stopped:
            return False
        if isinstance(position, StopReading):
            self._stopped = True
            return True
        if isinstance(position, AdoptShards):
            if self._owned is None:
                raise ValueError("a restriction of the whole stream adopts no shards")
            self._owned = self._owned | position.shards
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


_RESTRICTION_PARAM: Final = beam.DoFn.RestrictionParam()
"""No provider given: the DoFn is its own RestrictionProvider."""
_WATERMARK_PARAM: Final = beam.DoFn.WatermarkEstimatorParam(
    ManualWatermarkEstimator.default_provider()
)


class _ReadStreamFn(beam.DoFn, RestrictionProvider):
    """The splittable DoFn: element = stream name, restriction = ``StreamRestriction``.

    It is its own RestrictionProvider because the initial restriction depends on the settings
    (LATEST is pinned to the time the restriction is made), and its split on the stream's shards.
    One reader per restriction (they keep per-lineage pacing and idle state), sharing one client.
    """

    def __init__(self, settings: KinesisReadSettings) -> None:
        self._settings = settings
        self._client: KinesisClient | None = None
        self._readers: dict[frozenset[str] | None, KinesisStreamReader] = {}
        self._counters = StageCounters(Stage.READ)

    # RestrictionProvider -----------------------------------------------------------------------

    def initial_restriction(self, element: str) -> StreamRestriction:
        return StreamRestriction(start_timestamp=self._settings.start.start_timestamp(time.time()))

    def create_tracker(self, restriction: StreamRestriction) -> StreamRestrictionTracker:
        return StreamRestrictionTracker(restriction)

    def split(self, element: str, restriction: StreamRestriction) -> Iterator[StreamRestriction]:
        """One restriction per lineage of the shards listed now (one for the whole stream if the
        listing is empty); a restriction already split, or with progress, stays whole."""
        if (
            not self._settings.split_by_lineage
            or restriction.owned is not None
            or restriction.positions
            or restriction.stopped
        ):
            yield restriction
            return
        groups = lineages(self._list_shards())
        if not groups:
            yield restriction
            return
        for group in groups:
            yield StreamRestriction(start_timestamp=restriction.start_timestamp, owned=group)

    def _list_shards(self) -> dict[str, ShardInfo]:
        client = self._client if self._client is not None else kinesis_client(self._settings)
        try:
            # The reader's own discovery, with its retries and error messages.
            lister = KinesisStreamReader(
                client, self._settings, errors=BOTOCORE_ERRORS, counters=None
            )
            return lister.list_shards()
        finally:
            if client is not self._client:
                client.close()

    def restriction_size(self, element: str, restriction: StreamRestriction) -> float:
        return 0.0 if restriction.stopped else 1.0

    # DoFn --------------------------------------------------------------------------------------

    def setup(self) -> None:
        self._client = kinesis_client(self._settings)

    def _reader_for(self, restriction: StreamRestriction) -> KinesisStreamReader:
        key = restriction.owned
        if key is not None:  # a lineage grows by adoption; its reader stays the one it started with
            key = next((k for k in self._readers if k is not None and k <= key), key)
        reader = self._readers.get(key)
        if reader is None:
            assert self._client is not None, "setup() creates the client"
            reader = self._readers[key] = KinesisStreamReader(
                self._client, self._settings, errors=BOTOCORE_ERRORS, counters=self._counters
            )
        return reader

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: str,
        tracker: Any = _RESTRICTION_PARAM,
        watermark: Any = _WATERMARK_PARAM,
    ) -> Iterator[TimestampedValue[SourceBatch]]:
        if element != self._settings.stream_name:
            raise ValueError(f"element {element!r} is not the configured stream")
        reader = self._reader_for(tracker.current_restriction())
        claims_failed = False

        def claim(shard_claim: ShardClaim | AdoptShards) -> bool:
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
            if reader.should_stop() or reader.exhausted():
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

    def initial_restrictions(self) -> list[StreamRestriction]:
        """The restrictions the runner starts with: the initial one, split by shard lineage
        (what ``split`` yields on a worker; lists the stream's shards)."""
        fn = _ReadStreamFn(self._settings)
        return list(fn.split(self._settings.stream_name, fn.initial_restriction("")))

    def restriction_coder(self) -> Coder:
        """The coder Beam encodes this read's restrictions with at every checkpoint."""
        coder: Coder = _ReadStreamFn(self._settings).restriction_coder()
        return coder

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.PCollection[SourceBatch]:
        batches: beam.pvalue.PCollection[SourceBatch] = (
            pbegin
            | "Stream" >> beam.Create([self._settings.stream_name])
            | "ReadShards"
            >> beam.ParDo(_ReadStreamFn(self._settings)).with_output_types(SourceBatch)
        )
        return batches
