"""Measure the figures ``sluice cost`` prices, on the real code, and write them as JSON.

Usage: ``python -m benchmarks.measure [--events N] [--commits K] [--job-events M] [--out FILE]``
(``make bench`` writes ``reports/measurements.json``, which is committed).

What runs, all of it the production code on the seeded samples of ``devkit.samples``:
- the edges: IoT request bodies of 1..1000 readings through ``ingest_iot_request``, access-log
  lines in batches of 1,000 and 5,000 through ``log_lines_to_envelopes``, USGS documents through
  ``parse_feed_document``; every batch then through ``plan_delivery`` (KPL aggregation on, and off
  for one record per event): Kinesis records, bytes, 1 KB and 25 KB billing units, edge CPU time;
- the raw archive's encoding (``sluice.tables.archive.encode_batch``): gzipped bytes per event;
- the stream job's stages (decode, GeoIP with the synthetic demo databases, filters, windows) and
  its exactly-once writer into real Iceberg tables (SQLite catalog, local warehouse): ``--commits``
  flushes, each one commit interval of all three sources. Files written per commit are the files
  that appear in the warehouse (S3 PUTs); files read are the metadata files pyiceberg opens plus
  the data files its scans plan (a lower bound of S3 GETs: a Parquet read is at least one GET);
- optionally (``--job-events``) the Beam job end to end (moto Kinesis -> job -> Iceberg), as
  ``benchmarks.job`` runs it: events per second;
- the PyFlink application's steady events/s at parallelism 1 (what one MSF KPU runs), copied from
  ``--flink-app FILE`` (default ``reports/flink_app_bench.json``, written by ``make
  bench-flink-app``) when that file exists: ``sluice cost`` sizes MSF KPUs from it.
CPU times are process times (this machine is shared, so wall time would count other work).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from devkit import samples
from devkit.geoip_build import build_demo_databases
from sluice.core.contracts import Envelope, Source
from sluice.core.runtime import tune_gc
from sluice.cost.measurements import SCHEMA_VERSION, Measurements
from sluice.edges.delivery import KinesisEntry, plan_delivery
from sluice.edges.ingest import IotRequest, LogLine, ingest_iot_request, log_lines_to_envelopes
from sluice.parsing.feeds import USGS_EARTHQUAKES, parse_feed_document
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import wrap_feed_item
from sluice.stream.kpl import DEFAULT_AGGREGATE_BYTES, deaggregate
from sluice.stream.stages import InputRecord, decode_batch, enrich_batch, filter_batch, window_batch
from sluice.tables.archive import encode_batch
from sluice.transform.filters import DEFAULT_RULES, RecordFilter
from sluice.transform.geoip import GeoIpEnricher

__all__ = ["main", "measure"]

KB = 1024
PUT_UNIT = 25 * 1024
IOT_REQUEST_SIZES = (1, 10, 100, 1000)
LOG_BATCH_SIZES = (1000, 5000)
FEED_DOCUMENT_SIZES = (10, 100)
EVENT_TABLES = {"iot": "iot_readings", "weblog": "web_requests", "feed": "feed_items"}
WINDOW_SECONDS = 60
LATENESS_SECONDS = 600
SHARD = "shardId-000000000000"


def _entries_figures(entries: Sequence[KinesisEntry]) -> dict[str, int]:
    return {
        "kinesis_records": len(entries),
        "kinesis_bytes": sum(e.size for e in entries),
        "on_demand_kb": sum(math.ceil(e.size / KB) for e in entries),
        "put_units": sum(math.ceil(e.size / PUT_UNIT) for e in entries),
    }


def _plan(envelopes: Sequence[Envelope], aggregated: bool, now: datetime) -> list[KinesisEntry]:
    plan = plan_delivery(envelopes, aggregated=aggregated, now=now)
    return [entry for batch in plan.batches for entry in batch]


def _batch_measurement(
    size: int, batches: Sequence[Callable[[], list[Envelope]]], now: datetime
) -> tuple[dict[str, Any], list[Envelope]]:
    """Run each edge batch (parse + envelopes + KPL plan) and sum what it made and its CPU time."""
    entries: list[KinesisEntry] = []
    envelopes: list[Envelope] = []
    cpu = 0.0
    for make in batches:
        started = time.process_time()
        made = make()
        planned = _plan(made, True, now)
        cpu += time.process_time() - started
        envelopes.extend(made)
        entries.extend(planned)
    figures = {"events_per_batch": size, "batches": len(batches), **_entries_figures(entries),
               "edge_seconds": cpu}  # fmt: skip
    return figures, envelopes


def _source_figures(
    batches: list[dict[str, Any]],
    envelopes: list[Envelope],
    events: int,
    input_bytes: int,
    now: datetime,
) -> dict[str, Any]:
    """Per-event figures from the largest batch size measured and its envelopes."""
    largest = batches[-1]
    single = _plan(envelopes, False, now)
    records = [
        InputRecord(i, 0, now.timestamp(), e.data) for i, e in enumerate(single)
    ]  # one line per user record, as the archive keeps them
    archive_bytes = sum(len(content) for _, content in encode_batch(SHARD, records))
    return {
        "events": events,
        "input_bytes_per_event": input_bytes / events,
        "envelope_bytes_per_event": sum(e.size for e in single) / len(single),
        "on_demand_kb_per_event": sum(math.ceil(e.size / KB) for e in single) / len(single),
        "put_units_per_event": sum(math.ceil(e.size / PUT_UNIT) for e in single) / len(single),
        "aggregated_bytes_per_event": largest["kinesis_bytes"] / len(envelopes),
        "batches": batches,
        "edge_seconds_per_event": largest["edge_seconds"] / len(envelopes),
        "archive_bytes_per_event": archive_bytes / len(single),
    }


def _iot_bodies(count: int, start: datetime, span: float) -> list[bytes]:
    return list(
        samples.iot_messages(count, bad_ratio=0.0, start=start, interval=span / max(1, count))
    )


def measure_iot(events: int, sizes: Sequence[int], now: datetime) -> dict[str, Any]:
    lines = _iot_bodies(events, now - timedelta(minutes=10), 300)
    batches: list[dict[str, Any]] = []
    envelopes: list[Envelope] = []
    input_bytes = 0
    for size in sizes:
        chunks = [lines[i : i + size] for i in range(0, len(lines) - size + 1, size)]
        bodies = [b"\n".join(chunk) + b"\n" for chunk in chunks]

        def request(body: bytes) -> Callable[[], list[Envelope]]:
            return lambda: (
                ingest_iot_request(
                    IotRequest(body, content_type="application/x-ndjson"), now=now
                ).envelopes
            )

        figures, envelopes = _batch_measurement(size, [request(b) for b in bodies], now)
        batches.append(figures)
        input_bytes = sum(len(b) for b in bodies)
    return _source_figures(batches, envelopes, len(envelopes), input_bytes, now)


def _log_lines(count: int, start: datetime) -> list[bytes]:
    return [
        line.encode()
        for line in samples.access_log_lines(count, bad_ratio=0.0, start=start, interval=0.01)
    ]


def measure_weblog(events: int, sizes: Sequence[int], now: datetime) -> dict[str, Any]:
    lines = _log_lines(events, now - timedelta(minutes=10))
    parser = LogParser("auto")
    batches: list[dict[str, Any]] = []
    envelopes: list[Envelope] = []
    input_bytes = 0
    for size in sizes:
        chunks = [lines[i : i + size] for i in range(0, len(lines) - size + 1, size)]

        def batch(chunk: list[bytes], first: int) -> Callable[[], list[Envelope]]:
            numbered = [LogLine(first + k, line, len(line)) for k, line in enumerate(chunk)]
            return lambda: (
                log_lines_to_envelopes(parser, numbered, "s3://logs/access.log.gz", now=now).valid
            )

        figures, envelopes = _batch_measurement(
            size, [batch(c, i * size + 1) for i, c in enumerate(chunks)], now
        )
        batches.append(figures)
        input_bytes = sum(len(line) + 1 for chunk in chunks for line in chunk)
    return _source_figures(batches, envelopes, len(envelopes), input_bytes, now)


def measure_feed(sizes: Sequence[int], documents: int, now: datetime) -> dict[str, Any]:
    batches: list[dict[str, Any]] = []
    envelopes: list[Envelope] = []
    input_bytes = 0
    for size in sizes:
        docs = [
            samples.usgs_document(size, seed=k, start=now - timedelta(hours=1))
            for k in range(documents)
        ]

        def poll(doc: bytes) -> Callable[[], list[Envelope]]:
            def run() -> list[Envelope]:
                parsed = parse_feed_document(USGS_EARTHQUAKES, doc, now=now)
                return [wrap_feed_item(item, now) for item in parsed.valid]

            return run

        figures, envelopes = _batch_measurement(size, [poll(d) for d in docs], now)
        batches.append(figures)
        input_bytes = sum(len(d) for d in docs)
    return _source_figures(batches, envelopes, len(envelopes), input_bytes, now)


# --- real Iceberg commits -----------------------------------------------------------------------


class _Reads:
    """Counts files pyiceberg opens for reading: metadata through ``FileIO.new_input`` and data
    files through the scans' planned tasks (each read in full by the writer)."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def watching(self) -> Iterator[None]:
        from pyiceberg.io.pyarrow import PyArrowFileIO
        from pyiceberg.table import DataScan

        new_input = PyArrowFileIO.new_input
        plan_files = DataScan.plan_files

        def counted_input(io: Any, location: str) -> Any:
            self.count += 1
            return new_input(io, location)

        def counted_plan(scan: Any) -> Any:
            tasks = list(plan_files(scan))
            self.count += len(tasks)
            return tasks

        PyArrowFileIO.new_input = counted_input  # type: ignore[method-assign,assignment]
        DataScan.plan_files = counted_plan  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            PyArrowFileIO.new_input = new_input  # type: ignore[method-assign]
            DataScan.plan_files = plan_files  # type: ignore[method-assign]


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _interval_records(
    k: int, interval: float, per_commit: dict[str, int], base: datetime, first_sequence: int
) -> list[InputRecord]:
    """One commit interval of all three sources, through the real edges, as the stream holds it."""
    start = base + timedelta(seconds=k * interval)
    now = start + timedelta(seconds=interval)
    envelopes: list[Envelope] = []
    bodies = list(
        samples.iot_messages(per_commit["iot"], bad_ratio=0.01, seed=100 + k, start=start,
                             interval=interval / max(1, per_commit["iot"]))
    )  # fmt: skip
    for i in range(0, len(bodies), 10):
        body = b"\n".join(bodies[i : i + 10]) + b"\n"
        request = IotRequest(body, content_type="application/x-ndjson")
        envelopes.extend(ingest_iot_request(request, now=now).envelopes)
    lines = list(
        samples.access_log_lines(per_commit["weblog"], bad_ratio=0.01, seed=200 + k, start=start,
                                 interval=interval / max(1, per_commit["weblog"]))
    )  # fmt: skip
    numbered = [LogLine(j + 1, line.encode(), len(line)) for j, line in enumerate(lines)]
    result = log_lines_to_envelopes(LogParser("auto"), numbered, f"s3://logs/{k}.log", now=now)
    envelopes.extend(result.valid)
    document = samples.usgs_document(per_commit["feed"], seed=300 + k, start=start)
    items = parse_feed_document(USGS_EARTHQUAKES, document, now=now).valid
    envelopes.extend(wrap_feed_item(item, now) for item in items)
    records: list[InputRecord] = []
    arrival = now.timestamp()
    for offset, entry in enumerate(_plan(envelopes, True, now)):
        for sub, user in enumerate(deaggregate(entry.data, entry.partition_key)):
            records.append(InputRecord(first_sequence + offset, sub, arrival, user.data))
    return records


def measure_commits(
    commits: int, per_commit: dict[str, int], interval: float, now: datetime, tmp: Path
) -> tuple[dict[str, Any], dict[str, float], float]:
    """``commits`` flushes of the real stages and writer; the first (table creation) is not
    averaged. Returns the commit figures, Parquet bytes per event per source, and events/s."""
    from sluice.tables.catalog import WarehouseSettings, ensure_tables, open_catalog
    from sluice.tables.specs import WINDOW_TABLES
    from sluice.tables.warehouse import ExactlyOnceWriter

    settings = WarehouseSettings(state_dir=tmp / "state")
    tables = ensure_tables(open_catalog(settings), settings)
    root = Path(settings.resolved_warehouse().removeprefix("file://"))
    base = now - timedelta(seconds=commits * interval)
    clock = [base.timestamp()]
    writer = ExactlyOnceWriter(tables, WINDOW_SECONDS, clock=lambda: clock[0])
    city, asn = build_demo_databases(tmp)
    filters = {source: RecordFilter(DEFAULT_RULES, source.value) for source in Source}
    reads = _Reads()
    totals = {"events": 0, "written": 0, "read": 0, "data": 0, "event_data": 0, "tables": 0,
              "metadata_bytes": 0}  # fmt: skip
    cpu = 0.0
    events_total = 0
    sequence = 1
    previous: int | None = None
    with GeoIpEnricher(city, asn) as enricher:
        for k in range(commits):
            records = _interval_records(k, interval, per_commit, base, sequence)
            sequence = records[-1].sequence + 1
            clock[0] = records[-1].arrival + 1
            before = _files(root)
            snapshots = {n: t.refresh().current_snapshot() for n, t in tables.items()}
            started = time.process_time()
            reads.count = 0
            with reads.watching():
                batch = decode_batch(SHARD, records, previous_sequence=previous)
                batch = window_batch(filter_batch(enrich_batch(batch, enricher), filters),
                                     WINDOW_SECONDS, LATENESS_SECONDS)  # fmt: skip
                writer.add(batch)
                writer.flush()
            cpu += time.process_time() - started
            previous = batch.last_sequence
            events = sum(len(v) for v in batch.events.values())
            events_total += events
            new = {path: size for path, size in _files(root).items() if path not in before}
            if k == 0:
                continue  # table creation and first snapshots: not a steady-state commit
            changed = sum(
                _snapshot_id(t.refresh()) != _snapshot_id_of(snapshots[n])
                for n, t in tables.items()
            )
            data = [p for p in new if p.endswith(".parquet")]
            totals["events"] += events
            totals["written"] += len(new)
            totals["read"] += reads.count
            totals["data"] += len(data)
            totals["event_data"] += sum(
                1 for p in data if any(f"/{t}/" in f"/{p}" for t in EVENT_TABLES.values())
            )
            totals["tables"] += changed
            totals["metadata_bytes"] += sum(s for p, s in new.items() if not p.endswith(".parquet"))
    measured = commits - 1
    live = {name: _live_bytes(table) for name, table in tables.items()}
    rows = {name: _rows(table) for name, table in tables.items()}
    parquet = {source: live[table] / max(1, rows[table]) for source, table in EVENT_TABLES.items()}
    other = sum(live[name] for name in (*WINDOW_TABLES, "dead_letters"))
    figures = {
        "commits": measured,
        "events_per_commit": totals["events"] / measured,
        "tables": len(tables),
        "tables_committed_per_commit": totals["tables"] / measured,
        "data_files_per_commit": totals["data"] / measured,
        "event_data_files_per_commit": totals["event_data"] / measured,
        "files_written_per_commit": totals["written"] / measured,
        "files_read_per_commit": totals["read"] / measured,
        "metadata_bytes_per_commit": totals["metadata_bytes"] / measured,
        "window_bytes_per_event": other / max(1, events_total),
    }
    return figures, parquet, events_total / cpu


def _snapshot_id_of(snapshot: Any) -> int | None:
    return None if snapshot is None else int(snapshot.snapshot_id)


def _snapshot_id(table: Any) -> int | None:
    return _snapshot_id_of(table.current_snapshot())


def _live_bytes(table: Any) -> int:
    return sum(task.file.file_size_in_bytes for task in table.refresh().scan().plan_files())


def _rows(table: Any) -> int:
    return sum(task.file.record_count for task in table.refresh().scan().plan_files())


def measure_beam_job(events: int) -> float:
    """The Beam job end to end on ``events`` IoT events, as ``benchmarks.job`` runs it."""
    from benchmarks.job import fill
    from infra.local.stack import LocalAws, create_resources

    idle = 2.0
    with tempfile.TemporaryDirectory() as tmp, LocalAws(Path(tmp) / "aws") as aws:
        aws.apply_env()
        resources = create_resources(aws.env)
        fill(aws.env, resources.stream, events)
        from beam_jobs.run import main as run_job

        started = time.perf_counter()
        run_job([
            "--stream_name", resources.stream, "--stop_when_idle_seconds", str(idle),
            "--commit_interval_seconds", "10", "--state_dir", str(Path(tmp) / "state"),
        ])  # fmt: skip
        return events / (time.perf_counter() - started - idle)


def measure(
    events: int,
    commits: int,
    events_per_commit: int,
    job_events: int,
    command: str,
    flink_app: Path | None = None,
) -> dict[str, Any]:
    """Every figure of the measurement file (see the module docstring)."""
    now = datetime.now(UTC).replace(microsecond=0)
    sizes = [s for s in IOT_REQUEST_SIZES if s <= events]
    log_sizes = [s for s in LOG_BATCH_SIZES if s <= events] or [events]
    sources = {
        "iot": measure_iot(events, sizes, now),
        "weblog": measure_weblog(events, log_sizes, now),
        "feed": measure_feed(FEED_DOCUMENT_SIZES, max(2, events // 1000), now),
    }
    per_commit = {"iot": events_per_commit, "weblog": max(1, events_per_commit // 4), "feed": 10}
    with tempfile.TemporaryDirectory() as tmp:
        commit_figures, parquet, stages_rate = measure_commits(
            commits, per_commit, 60.0, now, Path(tmp)
        )
    for source, figures in sources.items():
        figures["parquet_bytes_per_event"] = parquet[source]
    job: dict[str, float | None] = {
        "stages_events_per_second": stages_rate,
        "beam_job_events_per_second": None,
        "pyflink_app_events_per_second": pyflink_app_rate(flink_app),
    }
    if job_events:
        job["beam_job_events_per_second"] = measure_beam_job(job_events)
    document = {
        "schema_version": SCHEMA_VERSION,
        "measured_at": now.isoformat().replace("+00:00", "Z"),
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}",
        "notes": [
            "edge and stage CPU times are process times on this machine (one core of it)",
            "files read per commit are a lower bound of S3 GETs (a Parquet read is >= 1 GET)",
            "Parquet bytes per event: live files after the commits, uncompacted; the commits are "
            f"{per_commit['iot']} IoT readings, {per_commit['weblog']} log lines and "
            f"{per_commit['feed']} feed items each (1% bad IoT and log input)",
            "the archive is Sluice's own format (base64 JSON lines, gzip); Firehose's may differ",
        ],
        "max_aggregate_bytes": DEFAULT_AGGREGATE_BYTES,
        "sources": sources,
        "commits": commit_figures,
        "job": job,
    }
    Measurements.model_validate(document)  # what sluice cost reads, checked before writing
    return document


def pyflink_app_rate(path: Path | None) -> float | None:
    """The PyFlink application's steady events/s at p=1 from ``benchmarks.flink_app``'s JSON, or
    None when there is no such file (the figure needs the local Flink cluster: ``make
    bench-flink-app``)."""
    if path is None or not path.is_file():
        return None
    figures = orjson.loads(path.read_bytes())
    rate = (figures.get("pyflink_p1") or {}).get("steady_events_per_second")
    return float(rate) if rate else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per edge source")
    parser.add_argument(
        "--commits", type=int, default=6, help="Iceberg commits (first not averaged)"
    )
    parser.add_argument(
        "--events-per-commit", type=int, default=4000, help="IoT readings per commit"
    )
    parser.add_argument("--job-events", type=int, default=0, help="also time the Beam job (0: no)")
    parser.add_argument("--out", type=Path, default=Path("reports/measurements.json"))
    parser.add_argument(
        "--flink-app",
        type=Path,
        default=Path("reports/flink_app_bench.json"),
        help="benchmarks.flink_app's JSON (the PyFlink application's events/s), if it exists",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.events < 10 or args.commits < 2 or args.events_per_commit < 10:
        parser.error("--events and --events-per-commit must be >= 10, --commits >= 2")
    tune_gc()
    command = shlex.join(
        ["python", "-m", "benchmarks.measure", *(sys.argv[1:] if argv is None else argv)]
    )
    document = measure(
        args.events, args.commits, args.events_per_commit, args.job_events, command, args.flink_app
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    iot = document["sources"]["iot"]
    commit = document["commits"]
    print(
        f"measurements -> {args.out}: IoT {iot['envelope_bytes_per_event']:.0f} B/envelope, "
        f"{iot['aggregated_bytes_per_event']:.0f} B aggregated, "
        f"{iot['parquet_bytes_per_event']:.0f} B Parquet; per commit "
        f"{commit['data_files_per_commit']:.1f} data files, {commit['files_written_per_commit']:.1f} "
        f"written, {commit['files_read_per_commit']:.1f} read; stages "
        f"{document['job']['stages_events_per_second']:,.0f} events/s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
