"""Where the job's records come from: the one place the source is chosen (``user_records``).

In: ``sluice.input`` settings. Out: a ``DataStream`` of records keyed by their first field (the
shard) for ``operators.batch_records``: whole Kinesis records (``functions.KINESIS_RECORD``: shard,
sequence, arrival ms, data; KPL aggregates are de-aggregated per batch, in ``RunStages``) with
arrival-time watermarks, or the archive's user records (``functions.USER_RECORD``: shard, sequence,
sub-sequence, arrival seconds, data).

- ``kinesis``: the Kinesis source (``flink_jobs.kinesis_source``, a Java FLIP-27 source: Rows of
  shard_id, sequence_number, arrival_millis, data, one per Kinesis record) -> watermarks on arrival
  time, ``watermark.out-of-orderness.seconds`` behind -> KPL de-aggregation. Unbounded, or with
  ``bounded=true`` each shard up to where it is caught up, then the end of input (every window is
  written: a pre-filled stream's arrival times are seconds apart, so its watermark alone would
  never pass ``window_end + allowed_lateness``).
- ``archive``: the raw archive (``sluice.tables.archive`` layout: gzipped JSON lines of user records,
  already de-aggregated) read with Flink's ``FileSource`` -> one user record per line. Bounded: at
  its end the watermark jumps to the end of time, so every window is written.

A line that is not an archive record does not fail the job: it becomes a user record of shard
``archive-malformed`` whose data is the line, which the decoder dead-letters (``invalid_json``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyflink.common import Duration, Row, WatermarkStrategy
from pyflink.datastream import FlatMapFunction, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

from flink_jobs.app.functions import KINESIS_RECORD, USER_RECORD
from flink_jobs.app.settings import InputGroup
from sluice.core.errors import ConfigError
from sluice.stream.archive import read_archive_file

__all__ = ["MALFORMED_SHARD", "archive_paths", "parse_archive_line", "user_records"]

MALFORMED_SHARD = "archive-malformed"


def user_records(env: StreamExecutionEnvironment, settings: InputGroup, out_of_order: int) -> Any:
    """The user records of the configured source (the only place that tells them apart)."""
    if settings.source == "kinesis":
        return _kinesis(env, settings, out_of_order)
    return _archive(env, settings)


def _kinesis(env: StreamExecutionEnvironment, settings: InputGroup, out_of_order: int) -> Any:
    """The Kinesis source (``flink_jobs.kinesis_source.read_kinesis``, the Java FLIP-27 source in the
    shaded jar; bounded when ``settings.bounded``), arrival-time watermarks.
    Credentials: the AWS SDK's default chain in the TaskManagers (MSF: the application's role;
    locally: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` of the shell that started the cluster)."""
    from flink_jobs.kinesis_source import read_kinesis
    from sluice.stream.kinesis.positions import StartPosition
    from sluice.stream.kinesis.settings import KinesisReadSettings

    assert settings.stream_arn is not None
    read = KinesisReadSettings(
        stream_name=settings.stream_arn.rsplit("stream/", 1)[-1],
        start=StartPosition(kind=settings.initial_position),
        region_name=settings.aws_region,
        max_records_per_call=settings.records_per_call,
    )
    records = read_kinesis(env, read, endpoint=settings.aws_endpoint, bounded=settings.bounded)
    # No timestamp assigner: the source stamps each record with its arrival time already, and a
    # Python assigner would add a Python call per record.
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_seconds(out_of_order)
    ).with_idleness(Duration.of_seconds(max(30, out_of_order)))
    return records.assign_timestamps_and_watermarks(watermarks)


def _local_folder(location: str) -> Path | None:
    parsed = urlparse(location)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def _hours(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += timedelta(hours=1)


def archive_paths(settings: InputGroup) -> list[str]:
    """What the FileSource reads: the ``raw/`` folder, or, for a local archive and a time range,
    only the hour folders of that range that exist (pruning by folder, as ``sluice replay``)."""
    assert settings.archive_path is not None
    folder = _local_folder(settings.archive_path)
    root = settings.archive_path.rstrip("/")
    if folder is None:
        return [f"{root}/raw"]
    if not (folder / "raw").is_dir():
        raise ConfigError(f"no raw archive at {folder / 'raw'}: check sluice.input archive.path")
    if settings.archive_from is None or settings.archive_to is None:
        return [str((folder / "raw").resolve())]
    hours = [
        folder / "raw" / f"dt={h:%Y-%m-%d}" / f"hour={h:%H}"
        for h in _hours(settings.archive_from, settings.archive_to)
    ]
    found = [str(h.resolve()) for h in hours if h.is_dir()]
    if not found:
        raise ConfigError(
            f"the archive {folder / 'raw'} holds no hour folder in [{settings.archive_from}, "
            f"{settings.archive_to}): nothing to replay"
        )
    return found


def parse_archive_line(line: str) -> Row:
    """One archive line (``sluice.stream.archive``'s format) as a user record Row; a line that is
    not one becomes a record of ``MALFORMED_SHARD`` carrying the line, for its dead letter."""
    try:
        ((shard, record),) = read_archive_file(line.encode())  # the core's parser of the format
        return Row(shard, str(record.sequence), record.sub_sequence, record.arrival, record.data)
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        raw = line.encode("utf-8", "backslashreplace")
        sequence = int.from_bytes(hashlib.sha256(raw).digest()[:7], "big")
        return Row(MALFORMED_SHARD, str(sequence), 0, 0.0, raw)


class _ArchiveLines(FlatMapFunction):  # type: ignore[misc]
    def __init__(self, low: float | None, high: float | None) -> None:
        self.low, self.high = low, high

    def flat_map(self, value: str) -> Any:
        if not value.strip():
            return
        row = parse_archive_line(value)
        if row[0] != MALFORMED_SHARD:
            if self.low is not None and row[3] < self.low:
                return
            if self.high is not None and row[3] >= self.high:
                return
        yield row


def _archive(env: StreamExecutionEnvironment, settings: InputGroup) -> Any:
    source = FileSource.for_record_stream_format(
        StreamFormat.text_line_format(), *archive_paths(settings)
    ).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "ReadRawArchive")
    low = settings.archive_from.timestamp() if settings.archive_from else None
    high = settings.archive_to.timestamp() if settings.archive_to else None
    return lines.flat_map(_ArchiveLines(low, high), output_type=USER_RECORD).name(
        "ParseArchiveLines"
    )


__all__ += ["KINESIS_RECORD"]
