"""The raw-record archive: every user record the stream job read, kept so a time range can be replayed.

Layout (under a root: the warehouse locally, the archive bucket in production), partitioned by the
hour Kinesis received the records (their ``ApproximateArrivalTimestamp``, UTC)::

    <root>/raw/dt=YYYY-MM-DD/hour=HH/<shard_id>-<first_sequence>-<last_sequence>.jsonl.gz

Each file holds records of one shard, in shard order, one JSON line per user record (a KPL
aggregate's records share ``sequence`` and differ in ``sub``)::

    {"shard": "shardId-000000000000", "sequence": "4959...", "sub": 0, "arrival": 1772441400.123, "data": "<base64>"}

That is exactly what the job's stages start from (``sluice.stream.stages.InputRecord`` plus the shard), so a
replay decides everything as the stream did: positions give the same identities, arrival times the
same too-late verdicts. A file's name depends only on its shard and sequence range, and the gzip
header holds no time, so writing the same records again writes the same file. Files may overlap
(a job restarted before committing re-reads a range in different GetRecords calls): readers
de-duplicate by (shard, sequence, sub).

Production: Kinesis Data Firehose reads the stream into the archive bucket (``infra/aws/sluice.yaml``).
Its transformation Lambda (``edge_lambdas/archive_transform``, over ``firehose_records`` here) turns
each record into the line above (shard id, sequence number, KPL sub-sequence and
``approximateArrivalTimestamp`` are in its event; Firehose splits KPL aggregates first), Firehose
dynamic partitioning keys on the arrival hour with the S3 prefix
``raw/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/``, GZIP compression and
the file extension ``.jsonl.gz``. Firehose names its objects itself (not ``<shard>-<first>-<last>``);
readers rely only on the partition folders, the extension and the line format. An S3 lifecycle rule on ``raw/``
moves objects to Standard-IA after 30 days and to Glacier after 90 days (both days are
configuration of the bucket's stack, not of this code); replaying a range in Glacier needs a
restore first. Locally the stream job itself writes the same layout (``--archive``).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sluice.stream.archive import (
    archive_line,
    archive_lines,
    arrival_hour,
    hour_folder,
    read_archive_file,
)
from sluice.stream.stages import InputRecord

__all__ = [
    "archive_line",
    "encode_batch",
    "hour_folder",
    "iter_archive_files",
    "read_archive_file",
    "records_in_range",
    "split_at_sequences",
]


def encode_batch(shard_id: str, records: Sequence[InputRecord]) -> list[tuple[str, bytes]]:
    """One shard's records as archive files: (path relative to the root, gzipped lines) per arrival hour.

    Usually one file; a batch whose records arrived in two hours is split, so that pruning by
    hour folder never misses a record.
    """
    by_hour: dict[datetime, list[InputRecord]] = {}
    hours: dict[float, datetime] = {}  # a KPL aggregate's records share their arrival
    for record in records:
        hour = hours.get(record.arrival)
        if hour is None:
            hour = hours[record.arrival] = arrival_hour(record.arrival)
        by_hour.setdefault(hour, []).append(record)
    files = []
    for hour, group in sorted(by_hour.items()):
        lines = archive_lines(shard_id, group)
        name = f"{shard_id}-{group[0].sequence}-{group[-1].sequence}.jsonl.gz"
        # Level 1: a tenth of the CPU of gzip's default 9 for ~20% larger files (the local
        # archive only: Firehose compresses in production).
        files.append((f"{hour_folder(hour)}/{name}", gzip.compress(lines, 1, mtime=0)))
    return files


def iter_archive_files(root: Path, from_time: datetime, to_time: datetime) -> Iterator[Path]:
    """The archive files under ``root`` whose arrival hour overlaps ``[from_time, to_time)``, in path order.

    Pruning is by folder only: a file of an overlapping hour may hold records outside the range,
    which the reader drops by their arrival time.
    """
    start, end = arrival_hour(from_time.timestamp()), to_time.astimezone(UTC)
    hour = start
    while hour < end:
        folder = root / hour_folder(hour)
        if folder.is_dir():
            yield from sorted(p for p in folder.iterdir() if p.name.endswith(".jsonl.gz"))
        hour += timedelta(hours=1)


def records_in_range(
    pairs: Iterable[tuple[str, InputRecord]], from_time: datetime, to_time: datetime
) -> dict[str, list[InputRecord]]:
    """Per shard, the records that arrived in ``[from_time, to_time)``: de-duplicated, in shard order."""
    low, high = from_time.timestamp(), to_time.timestamp()
    seen: dict[str, dict[tuple[int, int], InputRecord]] = {}
    for shard, record in pairs:
        if low <= record.arrival < high:
            seen.setdefault(shard, {})[(record.sequence, record.sub_sequence)] = record
    return {shard: [byid[k] for k in sorted(byid)] for shard, byid in sorted(seen.items())}


def split_at_sequences(records: Iterable[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    """Consecutive batches of about ``size`` records, made as ``records`` are read; a KPL aggregate
    (one sequence) is never split."""
    current: list[InputRecord] = []
    for record in records:
        if len(current) >= size and current[-1].sequence != record.sequence:
            yield current
            current = []
        current.append(record)
    if current:
        yield current
