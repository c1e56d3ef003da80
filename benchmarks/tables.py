"""What the exactly-once writer costs in Iceberg files: metadata bytes per commit, and de-duplication.

Usage: ``python -m benchmarks.tables metadata [--commits 136]`` and
``python -m benchmarks.tables dedupe [--events 100000]``.

``metadata``: a local warehouse receives ``--commits`` flushes shaped like a quiet production minute
(a few IoT readings and web requests every flush, one of them late for the previous minute's window,
a dead letter every 10th, a feed item every 20th), event times advancing one minute per flush. Reports snapshots, ``*.metadata.json`` files and bytes
under each table's ``metadata/`` folder against the data bytes.

``dedupe``: ``--events`` IoT readings (event times over 10 minutes, in flushes of ``--batch``
events, each arriving just after its newest event) are written with duplicate detection and
without, into fresh warehouses that already hold ``--history`` minutes of earlier readings at the
same rate; the CPU time of the writer's flushes (and, with it, of finding the copies) is measured
``--repeat`` times each, alternating, and the best of each is reported per 100k events.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sluice.core.contracts import ErrorType, FeedItem, IotReading, Source, Stage, WebAccessLog
from sluice.core.deadletters import dead_letter
from sluice.stream.envelopes import (
    encode,
    wrap_access_log,
    wrap_dead_letter,
    wrap_feed_item,
    wrap_reading,
)
from sluice.stream.stages import InputRecord, JobBatch, decode_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _writer(state: Path, **options: Any) -> ExactlyOnceWriter:
    settings = WarehouseSettings(state_dir=state)
    tables = ensure_tables(open_catalog(settings), settings)
    accepted = inspect.signature(ExactlyOnceWriter).parameters
    return ExactlyOnceWriter(tables, 60, **{k: v for k, v in options.items() if k in accepted})


def _batch(records: list[bytes], first: int, previous: int | None, arrival: datetime) -> JobBatch:
    inputs = [
        InputRecord(first + i, 0, arrival.timestamp(), data) for i, data in enumerate(records)
    ]
    return window_batch(decode_batch("shard-0", inputs, previous_sequence=previous), 60, 600)


def _minute(n: int) -> list[bytes]:
    at = T0 + timedelta(minutes=n)
    out = [
        encode(wrap_reading(IotReading(device_id=f"d{d}", event_time=at + timedelta(seconds=d),
                                       metrics={"t": float(d)}), at))
        for d in range(5)
    ]  # fmt: skip
    if n:  # a late reading: the previous minute's window is rewritten (delete + append)
        late = IotReading(device_id="d0", event_time=at - timedelta(seconds=30), metrics={"t": 1.0})
        out.append(encode(wrap_reading(late, at)))
    out += [
        encode(wrap_access_log(WebAccessLog(client_ip="10.0.0.1", event_time=at, status=200,
                                            path="/p"), "bench", n * 10 + i, at))
        for i in range(3)
    ]  # fmt: skip
    if n % 10 == 0:
        letter = dead_letter(Source.IOT, Stage.EDGE_IOT, ErrorType.INVALID_JSON, "bad", f"x{n}",
                             first_seen=at)  # fmt: skip
        out.append(encode(wrap_dead_letter(letter, at)))
    if n % 20 == 0:
        item = FeedItem(feed="bench", item_id=str(n), event_time=at - timedelta(hours=1))
        out.append(encode(wrap_feed_item(item, at)))
    return out


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def metadata(commits: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        writer = _writer(state)
        sequence, previous = 0, None
        for n in range(commits):
            records = _minute(n)
            writer.add(_batch(records, sequence, previous, T0 + timedelta(minutes=n, seconds=59)))
            previous = sequence + len(records) - 1
            sequence += len(records)
            writer.flush()
        total_meta = total_data = 0
        print(f"{commits} flushes:")
        for name, table in writer.tables.items():
            table = table.refresh()
            root = state / "warehouse" / "sluice" / name
            jsons = len(list((root / "metadata").glob("*.metadata.json")))
            _, meta = _folder_bytes(root / "metadata")
            _, data = _folder_bytes(root / "data")
            total_meta += meta
            total_data += data
            print(f"  {name:16} snapshots {len(table.metadata.snapshots):4}  metadata.json files "
                  f"{jsons:4}  metadata {meta / 1e6:7.2f} MB  data {data / 1e6:6.2f} MB")  # fmt: skip
        print(f"  total metadata {total_meta / 1e6:.2f} MB for {total_data / 1e6:.2f} MB of data")


def _readings(
    count: int, start: datetime, span: timedelta, offset: int
) -> Iterator[tuple[datetime, bytes]]:
    step = span / count
    for i in range(count):
        at = start + step * i
        reading = IotReading(
            device_id=f"d{i % 50}", event_time=at, metrics={"t": 1.0}, message_id=f"m{offset + i}"
        )
        yield at, encode(wrap_reading(reading, at))


def _fill(
    writer: ExactlyOnceWriter,
    records: list[tuple[datetime, bytes]],
    batch: int,
    sequence: int,
    previous: int | None,
) -> tuple[float, int, int | None]:
    """Flush ``records`` in batches, each arriving 5 s after its newest event time (on time).

    Returns the CPU seconds (every thread of the process) the writer's flushes took."""
    spent = 0.0
    for first in range(0, len(records), batch):
        chunk = records[first : first + batch]
        arrival = max(at for at, _ in chunk) + timedelta(seconds=5)
        writer.add(_batch([data for _, data in chunk], sequence, previous, arrival))
        previous = sequence + len(chunk) - 1
        sequence += len(chunk)
        started = time.process_time()
        writer.flush()
        spent += time.process_time() - started
    return spent, sequence, previous


def _timed(writer: ExactlyOnceWriter, method: str, spent: list[float]) -> None:
    """Add the CPU seconds of every call of ``writer.<method>`` to ``spent[0]``."""
    inner = getattr(writer, method)

    def timed(*args: Any) -> Any:
        started = time.process_time()
        try:
            return inner(*args)
        finally:
            spent[0] += time.process_time() - started

    setattr(writer, method, timed)


def dedupe(events: int, batch: int, history_minutes: int, repeat: int = 3) -> None:
    now = T0 + timedelta(hours=1)
    history = list(_readings(events * history_minutes // 10, now - timedelta(minutes=10 + history_minutes),
                             timedelta(minutes=history_minutes), 10**9))  # fmt: skip
    fresh = list(_readings(events, now - timedelta(minutes=10), timedelta(minutes=10), 0))
    results: dict[str, list[float]] = {"without": [], "with": []}
    lookups: list[float] = []
    for _ in range(repeat):  # alternate, keep the best of each: the machine is shared
        for label, on in (("without", False), ("with", True)):
            with tempfile.TemporaryDirectory() as tmp:
                writer = _writer(Path(tmp) / "state", deduplicate=on)
                _, sequence, previous = _fill(writer, history, batch, 0, None)
                inside = [0.0]
                _timed(writer, "_duplicates", inside)
                seconds, _, _ = _fill(writer, fresh, batch, sequence, previous)
                rows = writer.tables["iot_readings"].refresh().scan().count()
            results[label].append(seconds)
            if on:
                lookups.append(inside[0])
            print(f"{label:7} de-duplication: {events} events, flushes {seconds:.2f} CPU s, "
                  f"of which finding copies {inside[0]:.2f} s ({rows} rows)")  # fmt: skip
    best = {label: min(times) for label, times in results.items()}
    for label, seconds in best.items():
        print(f"best {label:7}: {seconds / events * 100_000:.2f} CPU s of flushes per 100k events")
    print(f"finding copies (best): {min(lookups) / events * 100_000:.2f} CPU s per 100k events")
    extra = best["with"] - best["without"]
    print(
        f"extra cost of flushes: {extra / events * 100_000:.2f} CPU s per 100k events "
        f"({extra / best['without'] * 100:.0f} %)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    meta = commands.add_parser("metadata")
    meta.add_argument("--commits", type=int, default=136)
    dup = commands.add_parser("dedupe")
    dup.add_argument("--events", type=int, default=100_000)
    dup.add_argument("--batch", type=int, default=10_000)
    dup.add_argument("--history", type=int, default=30, help="minutes of earlier readings")
    dup.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "metadata":
        metadata(args.commits)
    else:
        dedupe(args.events, args.batch, args.history, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
