"""``sluice replay --from TIME --to TIME [job options]``: the stream job's stages over the raw archive.

In: the archive files (``sluice.tables.archive``) under ``<warehouse>/raw`` whose arrival hour overlaps
``[--from, --to)``; of those, the records that arrived in that range (times ISO-8601, UTC unless
they say otherwise). Out: the same tables the stream job writes, through the very same composites
(``beam_jobs.pipeline.process``: ParseAndValidate -> ... -> WriteToIceberg), in batch mode.
``--archive_root`` reads another warehouse's archive (a backfill into a fresh ``--state_dir``).

Each shard is one element: its records are de-duplicated (archive files may overlap), put in shard
order and cut into batches chained by ``previous_sequence``, so a shard's batches reach the writer
in one bundle as one contiguous chain. The writer skips records at or before each table's committed
position, so replaying what the tables already hold writes nothing, and replaying into an empty
warehouse (another ``--state_dir``: a backfill) writes what the stream wrote. Arrival times come
from the archive, so the too-late rule decides as it did in the stream.
Memory: a shard's records are read one run of overlapping files at a time (``shard_records``), so a
backfill of any length stays bounded; only archives whose file names do not say their shard
(Firehose's) are read whole. Limits: the archive is read from a file:// warehouse only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam

from beam_jobs.pipeline import local_root, process
from beam_jobs.run import configure_logging, job_flags, pipeline_options, run_and_report
from beam_jobs.settings import JobSettings, load_job_settings
from sluice.core.errors import ConfigError
from sluice.stream.kinesis.records import SourceBatch, SourceRecord
from sluice.stream.stages import InputRecord, JobBatch
from sluice.tables.archive import (
    iter_archive_files,
    read_archive_file,
    records_in_range,
    split_at_sequences,
)

__all__ = ["main", "shard_batches", "shard_records"]

REPLAY_STREAM = "archive"


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def shard_batches(shard: str, records: Iterable[InputRecord], size: int) -> Iterator[SourceBatch]:
    """One shard's records (in shard order) as chained source batches, as the Kinesis source emits;
    made as the records are read."""
    previous: str | None = None
    for chunk in split_at_sequences(records, size):
        batch = SourceBatch(
            stream=REPLAY_STREAM,
            shard_id=shard,
            records=tuple(
                SourceRecord(str(r.sequence), r.sub_sequence, r.arrival, "", r.data) for r in chunk
            ),
            first_sequence=str(chunk[0].sequence),
            last_sequence=str(chunk[-1].sequence),
            previous_sequence=previous,
            max_arrival=max(r.arrival for r in chunk),
            millis_behind_latest=0,
        )
        previous = batch.last_sequence
        yield batch


def _span(path: str) -> tuple[int, int]:
    named = _JOB_FILE.match(Path(path).name)
    assert named is not None, "shard_files groups only job-named files by shard"
    return int(named.group(2)), int(named.group(3))


def shard_records(
    shard: str, paths: Sequence[str], from_time: datetime, to_time: datetime
) -> Iterator[InputRecord]:
    """The records of ``shard`` in its job-named archive files that arrived in the range: in shard
    order, de-duplicated, one run of files at a time in memory.

    A run is a set of files whose sequence ranges (from their names) overlap: a range read again
    after a restart, or a batch split at an hour. Records of different runs cannot share a key or
    interleave, so each run is de-duplicated and ordered alone, and a shard's whole range is never
    held at once (a backfill of millions of records stays in bounded memory)."""
    run: list[str] = []
    end = -1

    def records_of(files: list[str]) -> list[InputRecord]:
        pairs = (pair for path in files for pair in read_archive_file(Path(path).read_bytes()))
        mine = (pair for pair in pairs if pair[0] == shard)
        return records_in_range(mine, from_time, to_time).get(shard, [])

    for path in sorted(paths, key=_span):
        first, last = _span(path)
        if run and first > end:
            yield from records_of(run)
            run = []
        run.append(path)
        end = max(end, last)
    if run:
        yield from records_of(run)


class _ReadShard(beam.DoFn):
    def __init__(self, from_time: datetime, to_time: datetime, size: int) -> None:
        super().__init__()
        self.from_time, self.to_time, self.size = from_time, to_time, size

    def process(self, element: tuple[str, list[str]]) -> Iterator[SourceBatch]:
        shard, paths = element
        if shard == ANY_SHARD:  # files of many shards, order unknown: read together
            pairs = (pair for path in paths for pair in read_archive_file(Path(path).read_bytes()))
            for each, records in records_in_range(pairs, self.from_time, self.to_time).items():
                yield from shard_batches(each, records, self.size)
            return
        yield from shard_batches(
            shard, shard_records(shard, paths, self.from_time, self.to_time), self.size
        )


ANY_SHARD = ""
"""The group of files whose names do not say their shard: read together, every shard in them."""

_JOB_FILE = re.compile(r"^(shardId-[0-9]+)-([0-9]+)-([0-9]+)\.jsonl\.gz$")
"""The stream job's own archive files: ``<shard>-<first>-<last>.jsonl.gz``."""


def shard_files(root: Path, from_time: datetime, to_time: datetime) -> list[tuple[str, list[str]]]:
    """Archive files of the range grouped by shard, read in parallel per shard.

    The stream job names each file after its shard; Firehose names its objects itself, and one
    object holds records of many shards. If any file's name does not say its shard, every file is
    one group (``ANY_SHARD``), read together, so no shard's records are split between readers."""
    by_shard: dict[str, list[str]] = {}
    paths = list(iter_archive_files(root, from_time, to_time))
    for path in paths:
        named = _JOB_FILE.match(path.name)
        if named is None:
            return [(ANY_SHARD, [str(p) for p in paths])]
        by_shard.setdefault(named.group(1), []).append(str(path))
    return sorted(by_shard.items())


def build_replay(
    pipeline: beam.Pipeline,
    settings: JobSettings,
    from_time: datetime,
    to_time: datetime,
    archive_root: str | None = None,
) -> beam.pvalue.PCollection[JobBatch]:
    """Apply the replay of ``[from_time, to_time)`` to ``pipeline`` (batch mode).

    ``archive_root``: the folder holding ``raw/`` (default: the warehouse's own folder).
    """
    root = archive_root or local_root(settings.warehouse_settings().resolved_warehouse())
    if root is None:
        raise ConfigError("replay reads a local archive only: give --archive_root")
    files = shard_files(Path(root), from_time, to_time)
    batches = (
        pipeline
        | "ArchiveFilesPerShard" >> beam.Create(files)
        | "ReadArchive"
        >> beam.ParDo(
            _ReadShard(from_time, to_time, settings.max_records_per_call)
        ).with_output_types(SourceBatch)
    )
    return process(batches, settings)


def main(argv: Sequence[str] | None = None) -> int:
    flags = job_flags("sluice replay")
    flags.parser.description = (
        "Re-process the raw archive of [--from, --to) through the stream job's stages (batch mode)."
    )
    flags.add_argument("--from", dest="from_time", type=_time, required=True, help="ISO-8601 time")
    flags.add_argument("--to", dest="to_time", type=_time, required=True, help="ISO-8601 time")
    flags.add_argument(
        "--archive_root",
        "--archive-root",
        help="folder holding raw/ (default: the warehouse folder); a backfill reads another's",
    )
    try:
        args, overrides = flags.parse(list(sys.argv[1:] if argv is None else argv))
        if args.from_time >= args.to_time:
            raise ConfigError("--from must be before --to")
        settings = load_job_settings(overrides)
        pipeline = beam.Pipeline(options=pipeline_options(settings, streaming=False))
        build_replay(pipeline, settings, args.from_time, args.to_time, args.archive_root)
    except ConfigError as err:
        print(f"sluice replay: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_style)
    return run_and_report(pipeline)


if __name__ == "__main__":
    sys.exit(main())
