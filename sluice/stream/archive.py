"""The raw-archive line: one user record of the stream as one JSON line, and Firehose's way to it.

In: user records with their shard (``InputRecord``), or a Kinesis Data Firehose transformation event.
Out: archive lines ``{"shard", "sequence", "sub", "arrival", "data": base64}`` (see
``sluice.tables.archive`` for the files and folders that hold them), and the Firehose answer whose
records are those lines, partitioned by arrival hour.

This is the core's part of the archive that needs no Iceberg: the Firehose transformation Lambda
(``edge_lambdas/archive_transform``) runs it without the ``tables`` extra.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from sluice.stream.stages import InputRecord

__all__ = [
    "ARCHIVE_PREFIX",
    "FirehoseOutcome",
    "archive_line",
    "archive_lines",
    "arrival_hour",
    "firehose_records",
    "hour_folder",
    "read_archive_file",
]

ARCHIVE_PREFIX = "raw"


def arrival_hour(arrival: float) -> datetime:
    """The UTC hour an arrival time (epoch seconds) falls in: the archive's partition."""
    return datetime.fromtimestamp(arrival, UTC).replace(minute=0, second=0, microsecond=0)


def hour_folder(hour: datetime) -> str:
    """The partition folder of an arrival hour, relative to the root: ``raw/dt=.../hour=..``."""
    return f"{ARCHIVE_PREFIX}/dt={hour:%Y-%m-%d}/hour={hour:%H}"


def archive_line(shard_id: str, record: InputRecord) -> bytes:
    """One user record as its archive line (newline included)."""
    item = {
        "shard": shard_id,
        "sequence": str(record.sequence),
        "sub": record.sub_sequence,
        "arrival": record.arrival,
        "data": base64.b64encode(record.data).decode("ascii"),
    }
    # orjson writes what json.dumps(item, separators=(",", ":")) writes, several times faster.
    return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)


def archive_lines(shard_id: str, records: Iterable[InputRecord]) -> bytes:
    """The archive lines of one shard's records, joined: byte for byte ``archive_line`` of each.

    Built per batch: the shard's JSON once, each distinct arrival's JSON once (a KPL aggregate's
    records share one), each line by one bytes format (about half the time per record of
    ``archive_line``). The fields hold no character to escape but the shard's and the arrival's,
    which orjson writes as ``archive_line`` does; the sequence numbers are ints, written in digits."""
    head = b'{"shard":' + orjson.dumps(shard_id) + b',"sequence":"'
    encode = binascii.b2a_base64
    arrivals: dict[float, bytes] = {}
    lines = []
    for record in records:
        arrival = record.arrival
        # Not cached: other types, and 0.0 and -0.0 (keys equal to 0 and to each other, each with
        # its own JSON).
        cached = type(arrival) is float and arrival
        text = arrivals.get(arrival) if cached else None
        if text is None:
            text = orjson.dumps(arrival)
            if cached:
                arrivals[arrival] = text
        lines.append(b'%b%d","sub":%d,"arrival":%b,"data":"%b"}\n' % (
            head, record.sequence, record.sub_sequence, text, encode(record.data, newline=False)))  # fmt: skip
    return b"".join(lines)


def read_archive_file(content: bytes) -> list[tuple[str, InputRecord]]:
    """The (shard, record) pairs of one archive file (gzipped or not), in file order."""
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    out = []
    for line in content.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        record = InputRecord(
            int(item["sequence"]),
            int(item["sub"]),
            float(item["arrival"]),
            base64.b64decode(item["data"]),
        )
        out.append((str(item["shard"]), record))
    return out


@dataclass(frozen=True, slots=True)
class FirehoseOutcome:
    """The answer to one Firehose transformation invocation, and what it did."""

    records: list[dict[str, Any]]
    """One per input record, in order: ``recordId``, ``result``, ``data`` (base64), and for an
    ``Ok`` record ``metadata.partitionKeys`` (``dt``, ``hour``)."""
    archived: int
    failed: dict[str, str]
    """``recordId`` -> why it could not be archived (Firehose writes those to its error prefix)."""


def _firehose_record(record: dict[str, Any]) -> tuple[str, InputRecord]:
    meta = record["kinesisRecordMetadata"]
    sub = meta.get("subsequenceNumber")
    arrival_ms = meta.get("approximateArrivalTimestamp")
    if arrival_ms is None:
        arrival_ms = record["approximateArrivalTimestamp"]
    return str(meta["shardId"]), InputRecord(
        int(meta["sequenceNumber"]),
        int(sub) if sub not in (None, "") else 0,
        int(arrival_ms) / 1000,
        base64.b64decode(record["data"], validate=True),
    )


def firehose_records(records: Iterable[dict[str, Any]]) -> FirehoseOutcome:
    """Kinesis Data Firehose's transformation of the stream into the archive: each record it read
    from the stream (KPL aggregates already split by Firehose, ``kinesisRecordMetadata`` giving the
    shard, sequence, sub-sequence and arrival) becomes its archive line, with its arrival hour as
    the partition keys of the ``raw/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/``
    prefix: objects Firehose writes hold exactly what the job's own archive holds.

    A record that is not from a stream (no metadata) or cannot be read is ``ProcessingFailed``:
    Firehose keeps it, unchanged, under its error prefix; nothing is dropped."""
    out: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for record in records:
        record_id = str(record.get("recordId", ""))
        try:
            shard, item = _firehose_record(record)
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            failed[record_id] = (
                f"not a Kinesis stream record Firehose read: {type(err).__name__}: {err}"
            )
            out.append(
                {
                    "recordId": record_id,
                    "result": "ProcessingFailed",
                    "data": record.get("data", ""),
                }
            )
            continue
        hour = arrival_hour(item.arrival)
        out.append(
            {
                "recordId": record_id,
                "result": "Ok",
                "data": base64.b64encode(archive_line(shard, item)).decode("ascii"),
                "metadata": {"partitionKeys": {"dt": f"{hour:%Y-%m-%d}", "hour": f"{hour:%H}"}},
            }
        )
    return FirehoseOutcome(out, len(out) - len(failed), failed)
