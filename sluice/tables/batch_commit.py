"""One invocation's batches through every stage and into the six tables, exactly once.

In: the records of one or more shards as a Kinesis event source mapping delivers them
(``sluice.stream.lambda_events.ShardRecords``), the deployment's identity (``job``: stable for one
deployment of the transform Lambda, shared by all its concurrent invocations).
Out: rows in the same six tables the stream job writes, committed by ``ExactlyOnceWriter`` with each
shard's position, and per shard an outcome: committed, or the first Kinesis sequence number the
mapping must deliver again (a batch item failure).
Dead letters: what the stages and the writer make of a record they cannot take (a record never
fails its batch). Nothing else: a shard's outcome is a failure only when its commit did not happen
(tables unreachable, conflicts past the writer's retries, a newer owner).

Exactly-once over redelivery: a mapping delivers a shard's records in order, and again after a
failure or a timeout (the whole batch, or halves of it with BisectBatchOnFunctionError). Records at
or before the smallest position the tables hold for their shard are skipped before any stage runs;
those between the smallest and a table's own position are skipped by that table (the writer). So a
batch delivered twice, or a commit cut off between two tables, lands once.

Ownership (``sluice.tables.ownership``): the tables have one owner at a time. A deployment of the
Lambda path is one owner, ``Owner(epoch, job)`` with ``job`` fixed for the deployment, so its
invocations on different shards never fence each other. ``claim_for_deployment`` decides per
invocation, from the tables alone:
- the newest owner is this deployment: write under it (and finish its claim on a table an
  interrupted claim missed);
- this deployment never owned the tables: claim them (epoch one higher than any recorded, the
  stream's identity checked as the job checks it); a Flink/Beam job still writing is then fenced at
  its next commit, exactly as when a newer job starts;
- this deployment owned them once and a newer owner took over (a Flink job, a later deployment):
  ``WriterFenced``, for good. Its batches are reported failed, so the mapping's checkpoint never
  passes a record nobody wrote; redeploying (a new ``job``) takes the tables back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sluice.core.config import CoreSettings
from sluice.core.errors import ConfigError, SluiceError
from sluice.stream.lambda_events import ShardRecords
from sluice.stream.run import StageRunner
from sluice.tables.catalog import (
    START_PROPERTY,
    WarehouseSettings,
    ensure_tables,
    first_start,
    open_catalog,
)
from sluice.tables.ownership import (
    OWNER_PROPERTY,
    Owner,
    StreamIdentity,
    WriterFenced,
    record_claim,
    recorded_stream,
    stream_decision,
    table_owner,
)
from sluice.tables.warehouse import DEFAULT_POSITIONS_COMMIT_SECONDS, ExactlyOnceWriter

__all__ = [
    "BatchCommitter",
    "InvocationReport",
    "ShardOutcome",
    "claim_for_deployment",
    "owners_in_history",
]

_LOG = logging.getLogger(__name__)
_CLAIM_ATTEMPTS = 5
OnNewStream = Literal["refuse", "start_from_position"]


def owners_in_history(table: Table) -> set[str]:
    """The ``job`` of every owner recorded by the snapshots the table still keeps."""
    jobs: set[str] = set()
    for snapshot in table.snapshots():
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if OWNER_PROPERTY in props:
            jobs.add(Owner.decode(props[OWNER_PROPERTY]).job)
    return jobs


def claim_for_deployment(
    tables: Mapping[str, Table],
    job: str,
    stream: StreamIdentity | None,
    *,
    on_new_stream: OnNewStream = "refuse",
    now: float | None = None,
) -> Owner:
    """The owner this deployment writes under (see the module docstring for the three cases)."""
    owners = {name: table_owner(t) for name, t in tables.items()}
    recorded = [o for o in owners.values() if o is not None]
    newest = max(recorded, key=lambda o: (o.epoch, o.job), default=None)
    if newest is not None and newest.job == job:
        for name, owner in owners.items():
            if owner is None or owner.job != job:
                _claim_one(name, tables[name], newest, reset=False)
        return newest
    if newest is not None and any(job in owners_in_history(t) for t in tables.values()):
        raise WriterFenced(
            f"another writer (epoch {newest.epoch}, job {newest.job}, started {newest.started}) "
            f"took the tables over from this deployment ({job}); it writes nothing more: "
            "deploy the Lambda path again to take them back"
        )
    reset = False
    if stream is not None:
        identity, has_positions = recorded_stream(tables)
        reset = stream_decision(identity, has_positions, stream, on_new_stream)
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    owner = Owner(
        epoch=(newest.epoch if newest is not None else 0) + 1,
        job=job,
        started=at.isoformat(timespec="seconds"),
        stream=stream,
    )
    for name, table in tables.items():
        _claim_one(name, table, owner, reset=reset)
    # The mapping reads a new shard from the trim horizon; a start the tables already hold (a job
    # that started at LATEST) is kept, and applied to shards without positions (``_after_start``).
    first_start(tables, "trim_horizon", replace=reset)
    _LOG.info("deployment %s claimed the tables (epoch %d)", job, owner.epoch)
    return owner


def _claim_one(name: str, table: Table, owner: Owner, *, reset: bool) -> None:
    """A snapshot of no rows carrying ``owner`` and the table's positions (emptied on ``reset``)."""

    def refuse(current: Owner) -> SluiceError | None:
        if not current.newer_than(owner):
            return None
        return WriterFenced(
            f"another writer (epoch {current.epoch}, job {current.job}) claimed table {name} "
            f"while deployment {owner.job} was claiming it"
        )

    record_claim(table, owner, reset=reset, refuse=refuse)


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """What became of one shard's records in this invocation."""

    shard_id: str
    retry_from: str | None
    """None: done (committed, or nothing new). Else the first sequence number to deliver again."""
    received: int
    """User records delivered."""
    skipped: int
    """User records dropped before the stages: at or before the smallest position the tables hold
    for the shard (a redelivery), or arrived before the tables' first start. Records between the
    smallest and a table's own position go through the stages and that table skips them."""
    reason: str | None = None


@dataclass(slots=True)
class InvocationReport:
    """Every shard's outcome, the rows committed per table, and the stages' counters."""

    shards: list[ShardOutcome] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    conflicts: int = 0
    fenced: bool = False

    @property
    def retry_from(self) -> list[str]:
        return [s.retry_from for s in self.shards if s.retry_from is not None]


class BatchCommitter:
    """The stages and the tables, opened once per execution environment, used per invocation.

    ``job``: this deployment's owner id. ``stream``: called once, at the first claim, for the
    stream's identity (DescribeStreamSummary in the Lambda), or None to skip that check.
    """

    def __init__(
        self,
        core: CoreSettings,
        warehouse: WarehouseSettings,
        job: str,
        *,
        positions_commit_seconds: float = DEFAULT_POSITIONS_COMMIT_SECONDS,
        on_new_stream: OnNewStream = "refuse",
        stream: StreamIdentity | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.core = core
        self.job = job
        self.positions_commit_seconds = positions_commit_seconds
        self.on_new_stream: OnNewStream = on_new_stream
        self.stream = stream
        self.catalog = catalog if catalog is not None else open_catalog(warehouse)
        self.tables = ensure_tables(self.catalog, warehouse)
        self.runner = StageRunner(core)

    def close(self) -> None:
        self.runner.close()

    def _fresh_tables(self) -> dict[str, Table]:
        return {name: table.refresh() for name, table in self.tables.items()}

    def process(self, batches: Sequence[ShardRecords]) -> InvocationReport:
        """Run the stages over each shard's new records and commit them all in one flush."""
        report = InvocationReport()
        try:
            tables = self._fresh_tables()
            owner = claim_for_deployment(
                tables, self.job, self.stream, on_new_stream=self.on_new_stream
            )
            writer = ExactlyOnceWriter(
                tables,
                self.core.window_seconds,
                positions_commit_seconds=self.positions_commit_seconds,
                owner=owner,
            )
        except (WriterFenced, ConfigError) as err:
            return self._all_failed(batches, report, err)
        except Exception as err:  # noqa: BLE001 - tables unreachable: the mapping delivers again
            return self._all_failed(batches, report, err)
        resume = writer.resume_positions()
        start = _first_start_seconds(tables)
        pending: list[tuple[ShardRecords, str, int, int]] = []
        for shard in batches:
            position = resume.get(shard.shard_id)
            records = shard.records_after(position)
            if position is None and start is not None:
                records = [r for r in records if r.arrival >= start]
            retry = shard.first_after(position)
            skipped = len(shard.records) - len(records)
            if not records or retry is None:
                report.shards.append(
                    ShardOutcome(shard.shard_id, None, len(shard.records), skipped)
                )
                continue
            batch = self.runner.run(shard.shard_id, records)
            for name, value in batch.counters.items():
                report.counters[name] = report.counters.get(name, 0) + value
            writer.add(batch)
            pending.append((shard, retry, len(shard.records), skipped))
        if not pending:
            return report
        try:
            flushed = writer.flush()
            if flushed.held_back:
                raise RuntimeError(f"{flushed.held_back} batches do not follow their shard's last")
        except WriterFenced as err:
            report.fenced = True
            return self._failed(pending, report, err)
        except Exception as err:  # noqa: BLE001 - a commit that did not happen: deliver again
            return self._failed(pending, report, err)
        for name, rows in flushed.rows.items():
            report.rows[name] = report.rows.get(name, 0) + rows
        report.duplicates += flushed.duplicates
        report.conflicts += flushed.conflicts
        report.shards.extend(
            ShardOutcome(shard.shard_id, None, received, skipped)
            for shard, _, received, skipped in pending
        )
        return report

    def _all_failed(
        self, batches: Sequence[ShardRecords], report: InvocationReport, err: Exception
    ) -> InvocationReport:
        report.fenced = isinstance(err, WriterFenced)
        pending = [
            (s, s.sequence_numbers[0], len(s.records), 0) for s in batches if s.sequence_numbers
        ]
        return self._failed(pending, report, err)

    def _failed(
        self,
        pending: Sequence[tuple[ShardRecords, str, int, int]],
        report: InvocationReport,
        err: Exception,
    ) -> InvocationReport:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        _LOG.warning("commit failed, the mapping delivers again: %s", reason)
        report.shards.extend(
            ShardOutcome(shard.shard_id, retry, received, skipped, reason)
            for shard, retry, received, skipped in pending
        )
        return report


def _first_start_seconds(tables: Mapping[str, Table]) -> float | None:
    """The tables' first start as epoch seconds; None for the trim horizon or none recorded."""
    starts = [
        t.properties[START_PROPERTY] for t in tables.values() if START_PROPERTY in t.properties
    ]
    if not starts or "trim_horizon" in starts:
        return None
    return min(float(s) for s in starts)
