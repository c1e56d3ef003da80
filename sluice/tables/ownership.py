"""Who may write the job's tables: the stream they hold positions of, and the job that owns them.

In: the six tables, the identity of the stream the job is about to read (``StreamIdentity``: name,
ARN, creation time, from DescribeStreamSummary), what to do with a recreated stream.
Out: ``claim_tables`` gives the starting job an ``Owner`` (a new *epoch*, one higher than any the
tables recorded, with the stream's identity) and records it, with the positions the job resumes
from, in a snapshot of every table (property ``sluice.owner``). Every later commit of that job
carries the same owner; ``check_owner`` tells a writer whether a table still belongs to it.
Errors: a different stream against existing tables, or a recreated stream without
``on_new_stream="start_from_position"``, is a ``ConfigError`` of one line naming the option to use.
A writer whose tables a newer job claimed gets ``WriterFenced``.

Why epochs and not a lease: a job killed with SIGKILL leaves nothing to expire, and its restart
must write at once; so the newest job wins and the older one stops at its next commit (the claim is
a snapshot, so that commit's compare-and-swap fails and the refreshed table names a newer epoch).
Why the stream's identity: positions are sequence numbers of one stream; applied to a recreated
stream (same name, new creation time) or another stream they skip records silently.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from sluice.core.errors import ConfigError, SluiceError
from sluice.tables.catalog import POSITIONS_PROPERTY, table_positions

__all__ = [
    "FENCED_MARKER",
    "OWNER_PROPERTY",
    "Owner",
    "StreamIdentity",
    "WriterFenced",
    "check_owner",
    "claim_tables",
    "fenced_message",
    "record_claim",
    "recorded_stream",
    "stream_decision",
    "table_owner",
]

_LOG = logging.getLogger(__name__)

OWNER_PROPERTY = "sluice.owner"
"""Snapshot-summary property: the ``Owner`` (epoch, job id, stream) of the job that committed it."""
FENCED_MARKER = "[fenced] "
"""Starts every ``WriterFenced`` message, so a runner's wrapped error can be recognised."""
_CLAIM_ATTEMPTS = 5

OnNewStream = Literal["refuse", "start_from_position"]


class WriterFenced(SluiceError):
    """This writer may no longer commit: a newer job owns the tables, or another writer committed
    records of the same shards. Nothing of the refused commit was written."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{FENCED_MARKER}{message}")


def fenced_message(text: str) -> str | None:
    """The one-line ``WriterFenced`` message inside ``text`` (a runner's error report), if any."""
    start = text.rfind(FENCED_MARKER)  # runners nest the error's text in their own
    if start < 0:
        return None
    line = text[start + len(FENCED_MARKER) :].splitlines()[0]
    return line.split(" [while running ")[0].strip().rstrip("'\"")


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """A Kinesis stream as DescribeStreamSummary names it; a recreated stream keeps name and ARN
    but gets a new creation time."""

    name: str
    arn: str
    created: float
    """StreamCreationTimestamp, epoch seconds."""

    def describe(self) -> str:
        created = datetime.fromtimestamp(self.created, UTC).isoformat(timespec="seconds")
        return f"{self.arn} created {created}"


@dataclass(frozen=True, slots=True)
class Owner:
    """The job allowed to write the tables: ``epoch`` grows with every job start."""

    epoch: int
    job: str
    """A random id of the job run (tells two runs with the same epoch apart)."""
    started: str
    """ISO-8601 time the job claimed the tables (for the messages)."""
    stream: StreamIdentity | None = None

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def decode(text: str) -> Owner:
        value = json.loads(text)
        stream = value.get("stream")
        return Owner(
            epoch=int(value["epoch"]),
            job=str(value["job"]),
            started=str(value.get("started", "")),
            stream=StreamIdentity(**stream) if stream else None,
        )

    def newer_than(self, other: Owner) -> bool:
        return (self.epoch, self.job) > (other.epoch, other.job)


def table_owner(table: Table) -> Owner | None:
    """The owner recorded by the table's newest snapshot that records one (maintenance and
    re-drive snapshots carry none, so the walk goes past them, as ``table_positions`` does)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if OWNER_PROPERTY in props:
            return Owner.decode(props[OWNER_PROPERTY])
        snapshot = (
            table.snapshot_by_id(snapshot.parent_snapshot_id)
            if snapshot.parent_snapshot_id
            else None
        )
    return None


def check_owner(name: str, table: Table, owner: Owner) -> None:
    """Raise ``WriterFenced`` if table ``name`` (as loaded) belongs to a job newer than ``owner``."""
    recorded = table_owner(table)
    if recorded is not None and recorded.newer_than(owner):
        raise WriterFenced(
            f"another sluice job (epoch {recorded.epoch}, started {recorded.started}) took over "
            f"table {name} from this one (epoch {owner.epoch}); this job stopped without "
            "committing its last bundle (the newer job reads it)"
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``claim_tables`` decided: the job's owner and whether the stream's positions were reset."""

    owner: Owner
    reset: bool


def recorded_stream(tables: Mapping[str, Table]) -> tuple[StreamIdentity | None, bool]:
    """The stream the tables hold positions of (newest owner's), and whether any positions exist."""
    owners = [o for o in (table_owner(t) for t in tables.values()) if o is not None]
    newest = max(owners, key=lambda o: (o.epoch, o.job), default=None)
    has_positions = any(table_positions(t) for t in tables.values())
    return (newest.stream if newest is not None else None), has_positions


def stream_decision(
    recorded: StreamIdentity | None,
    has_positions: bool,
    stream: StreamIdentity,
    on_new_stream: OnNewStream,
) -> bool:
    """Whether the positions must be reset for ``stream``; ``ConfigError`` if refused."""
    if recorded is None:
        if has_positions:
            _LOG.info(
                "the tables hold positions but no stream identity (written before Sluice recorded "
                "it): taking them as positions of %s",
                stream.describe(),
            )
        return False
    if recorded.name != stream.name:
        raise ConfigError(
            f"the tables hold positions of Kinesis stream {recorded.name!r} ({recorded.arn}), "
            f"not of {stream.name!r}: give --stream_name {recorded.name}, or a --state_dir (or "
            f"--namespace) of its own for {stream.name!r}"
        )
    if recorded.arn == stream.arn and recorded.created == stream.created:
        return False
    if on_new_stream == "refuse":
        raise ConfigError(
            f"Kinesis stream {stream.name!r} is not the one the tables hold positions of "
            f"(now {stream.describe()}, the tables' {recorded.describe()}): it was recreated; "
            "give --on_new_stream start_from_position to read it from --start_position"
        )
    _LOG.warning(
        "Kinesis stream %s was recreated (now %s, the tables held positions of %s): reading it "
        "from the start position, as --on_new_stream start_from_position says",
        stream.name,
        stream.describe(),
        recorded.describe(),
    )
    return True


def claim_tables(
    tables: Mapping[str, Table],
    stream: StreamIdentity | None,
    *,
    on_new_stream: OnNewStream = "refuse",
    now: float | None = None,
) -> Claim:
    """Check the stream against the tables, then make the starting job their owner.

    Every table gets a snapshot of no rows carrying the new owner and its positions (emptied when a
    recreated stream is read from the start). Each is a compare-and-swap on the snapshot read; a
    table changed meanwhile is re-read and claimed again, unless a newer owner claimed it, which
    ends this start with ``ConfigError`` (two jobs starting at once: the newer one runs).
    """
    reset = False
    if stream is not None:
        recorded, has_positions = recorded_stream(tables)
        reset = stream_decision(recorded, has_positions, stream, on_new_stream)
    owners = [o for o in (table_owner(t) for t in tables.values()) if o is not None]
    at = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    owner = Owner(
        epoch=max((o.epoch for o in owners), default=0) + 1,
        job=uuid.uuid4().hex,
        started=at.isoformat(timespec="seconds"),
        stream=stream,
    )
    for name, table in tables.items():
        _claim_one(name, table, owner, reset)
    return Claim(owner, reset)


def _claim_one(name: str, table: Table, owner: Owner, reset: bool) -> None:
    def refuse(current: Owner) -> SluiceError | None:
        if not current.newer_than(owner):
            return None
        return ConfigError(
            f"another sluice job (epoch {current.epoch}, started {current.started}) started "
            f"on these tables at the same time and owns {name}: stop one of them"
        )

    record_claim(table, owner, reset=reset, refuse=refuse)


def record_claim(
    table: Table,
    owner: Owner,
    *,
    reset: bool,
    refuse: Callable[[Owner], SluiceError | None],
) -> None:
    """Commit a snapshot of no rows carrying ``owner`` and the table's positions (emptied on
    ``reset``), retrying a lost commit race. ``refuse(current)``: the error to stop with when the
    table's current owner forbids the claim, else None; a table ``owner`` already holds is left."""
    for attempt in range(_CLAIM_ATTEMPTS):
        current = table_owner(table)
        if current is not None:
            error = refuse(current)
            if error is not None:
                raise error
            if current == owner:
                return
        positions = {} if reset else table_positions(table)
        properties = {
            POSITIONS_PROPERTY: json.dumps({s: str(q) for s, q in sorted(positions.items())}),
            OWNER_PROPERTY: owner.encode(),
        }
        try:
            table.append(table.schema().as_arrow().empty_table(), snapshot_properties=properties)
            return
        except CommitFailedException:
            if attempt == _CLAIM_ATTEMPTS - 1:
                raise
            table.refresh()
