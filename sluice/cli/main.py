"""The ``sluice`` command line.

``sluice parse iot|weblog|feed [FILES or -]`` reads raw input and writes valid normalized records as
JSON lines on standard output, dead letters as JSON lines to ``--dead-letters`` (default: standard
error), and, as the last line on standard error, a JSON summary ``{"valid": N, "dead_letters": M}``.
Exit status: 0 when the input was read (even if records were rejected); 2 for unusable arguments,
settings or unreadable files, with a message saying which.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import BaseModel

from sluice import __version__
from sluice.core.config import load_settings
from sluice.core.deadletters import BatchResult
from sluice.core.errors import ConfigError
from sluice.core.inputs import iter_line_batches, open_input
from sluice.core.runtime import tune_gc
from sluice.parsing.feeds import builtin_feed, parse_feed_document
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.transform.filters import RecordFilter

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    parse = commands.add_parser("parse", help="parse raw input into normalized JSON lines")
    parse.add_argument("source", choices=("iot", "weblog", "feed"))
    parse.add_argument(
        "files", nargs="*", default=["-"], help="input files (gzip detected), - for stdin"
    )
    parse.add_argument(
        "--log-format", help="weblog: 'auto', 'combined', 'main' or an nginx log_format"
    )
    parse.add_argument(
        "--feed", default="usgs", help="feed: the built-in feed spec (default: usgs)"
    )
    parse.add_argument("--geoip-db", type=Path, help="weblog: MaxMind City/Country database")
    parse.add_argument("--asn-db", type=Path, help="weblog: MaxMind ASN database")
    parse.add_argument("--no-filters", action="store_true", help="do not apply the filter rules")
    parse.add_argument("--dead-letters", type=Path, help="file for dead letters (default: stderr)")

    query = commands.add_parser("query", help="run SQL (DuckDB) over the Iceberg tables")
    query.add_argument(
        "sql", help="SQL naming tables by plain name, e.g. 'SELECT * FROM dead_letters'"
    )
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument(
        "--state-dir", type=Path, help="local catalog folder (default: SLUICE_STATE_DIR or .sluice)"
    )
    query.add_argument(
        "--explain",
        action="store_true",
        help="also print, per table read, the pushed-down filter and data files planned/total "
        "(JSON lines on stderr)",
    )

    tables = commands.add_parser(
        "tables", help="list the tables: rows, snapshots, data files, last commit (metadata only)"
    )
    tables.add_argument("--format", choices=("table", "csv", "json"), default="table")
    tables.add_argument(
        "--state-dir", type=Path, help="local catalog folder (default: SLUICE_STATE_DIR or .sluice)"
    )

    job = commands.add_parser(
        "job",
        help="the stream job: 'run' starts it (options: sluice job run --help)",
        add_help=False,
    )
    job.add_argument("action", choices=("run",))
    job.add_argument("args", nargs=argparse.REMAINDER, help="job options (see --help)")

    replay = commands.add_parser(
        "replay",
        help="re-process the raw archive over a time range: sluice replay --from T --to T [job options]",
        add_help=False,
        prefix_chars="+",  # every flag, --from and --to included, goes to beam_jobs.replay
    )
    replay.add_argument("args", nargs=argparse.REMAINDER, help="--from, --to and job options")

    edge = commands.add_parser(
        "edge",
        help="run the Lambda edges locally: 'serve' (HTTP, like API Gateway) or 'poll' (feeds once)",
        add_help=False,
    )
    edge.add_argument("action", choices=("serve", "poll"))
    edge.add_argument("args", nargs=argparse.REMAINDER, help="options of the action (see --help)")

    maintain = commands.add_parser(
        "maintain",
        help="expire snapshots, compact closed partitions, remove orphan files (keeps positions)",
    )
    maintain.add_argument(
        "--expire-older-than",
        default="7d",
        help="expire snapshots older than this (e.g. 7d, 12h; default 7d); 'off' to skip",
    )
    maintain.add_argument(
        "--keep-last", type=int, default=5, help="always keep this many newest snapshots (5)"
    )
    maintain.add_argument(
        "--compact", action="store_true", help="rewrite small files of closed partitions"
    )
    maintain.add_argument(
        "--lateness", default="10m", help="a partition is closed this long after its end (10m)"
    )
    maintain.add_argument(
        "--target-file-size", type=int, help="compaction target bytes (table property if unset)"
    )
    maintain.add_argument(
        "--remove-orphans", action="store_true", help="delete unreferenced files (file:// only)"
    )
    maintain.add_argument(
        "--orphan-min-age", default="1d", help="only delete orphans older than this (default 1d)"
    )
    maintain.add_argument("--dry-run", action="store_true", help="report, change nothing")
    maintain.add_argument(
        "--print-athena",
        action="store_true",
        help="print the Athena OPTIMIZE/VACUUM statements for production and exit",
    )
    maintain.add_argument(
        "--state-dir", type=Path, help="local catalog folder (default: SLUICE_STATE_DIR or .sluice)"
    )

    dead_letters = commands.add_parser(
        "dead-letters",
        help="list dead letters; --redrive re-submits those that parse now and removes them",
    )
    dead_letters.add_argument("--reason", help="only this error type, e.g. unparseable_line")
    dead_letters.add_argument("--source", choices=("iot", "weblog", "feed"))
    dead_letters.add_argument("--limit", type=int, help="at most this many (oldest first)")
    dead_letters.add_argument("--format", choices=("table", "json"), default="table")
    dead_letters.add_argument(
        "--state-dir", type=Path, help="local catalog folder (default: SLUICE_STATE_DIR or .sluice)"
    )
    dead_letters.add_argument(
        "--redrive",
        action="store_true",
        help="re-try the selected letters with today's configuration, publish those that pass to "
        "the stream, then delete them from the table (one JSON summary line on stdout)",
    )
    dead_letters.add_argument(
        "--log-format", help="redrive: weblog format (default: SLUICE_LOG_FORMAT or auto)"
    )
    dead_letters.add_argument(
        "--stream-name", help="redrive: Kinesis stream (default: SLUICE_STREAM_NAME)"
    )
    dead_letters.add_argument(
        "--dry-run", action="store_true", help="redrive: report what would happen, change nothing"
    )

    samples = commands.add_parser(
        "samples", help="write generated sample input (for demos and tests)"
    )
    samples.add_argument("kind", choices=("iot", "weblog", "feed", "geoip"))
    samples.add_argument("--count", type=int, default=1000, help="how many records (default 1000)")
    samples.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    samples.add_argument("--bad-ratio", type=float, default=0.01, help="share of bad inputs (0.01)")
    samples.add_argument("--out", type=Path, help="geoip: directory for the demo .mmdb files")
    return parser


def _write_rows(
    out: IO[bytes], columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str
) -> None:
    """Rows as an aligned text table, CSV (with a header) or JSON lines."""
    import csv
    import io

    if fmt == "json":
        for row in rows:
            out.write(orjson.dumps(dict(zip(columns, row, strict=True)), default=str) + b"\n")
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows(rows)
        out.write(text.getvalue().encode())
    else:
        cells = [list(columns), *[["" if v is None else str(v) for v in row] for row in rows]]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(columns))]
        lines = [
            "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out.write(("\n".join(lines) + f"\n({len(rows)} rows)\n").encode())


def _warehouse(args: argparse.Namespace) -> tuple[Any, str]:
    from sluice.tables.warehouse import WarehouseSettings, open_catalog

    settings = WarehouseSettings(**({"state_dir": args.state_dir} if args.state_dir else {}))
    return open_catalog(settings), settings.namespace


def _run_query(args: argparse.Namespace, out: IO[bytes]) -> int:
    from sluice.analysts.query import QueryError, TablePlan, run

    catalog, namespace = _warehouse(args)
    plans: list[TablePlan] = []
    try:
        columns, rows = run(catalog, namespace, args.sql, plans)
    except QueryError as err:
        raise ConfigError(f"query failed: {err}") from None
    except Exception as err:  # noqa: BLE001 - pyiceberg raises many kinds; the user needs the text
        raise ConfigError(f"query failed: {err}") from None
    if args.explain:
        for plan in plans:
            sys.stderr.buffer.write(orjson.dumps({"explain": plan.as_dict()}) + b"\n")
        sys.stderr.buffer.flush()
    _write_rows(out, columns, rows, args.format)
    return 0


def _run_tables(args: argparse.Namespace, out: IO[bytes]) -> int:
    from sluice.analysts.query import table_infos

    catalog, namespace = _warehouse(args)
    infos = table_infos(catalog, namespace)
    columns = ["table", "rows", "snapshots", "data_files", "last_commit"]
    rows = [
        (
            i.table,
            i.rows,
            i.snapshots,
            i.data_files,
            i.last_commit.isoformat() if i.last_commit else None,
        )
        for i in infos
    ]
    _write_rows(out, columns, rows, args.format)
    return 0


def _run_maintain(args: argparse.Namespace, out: IO[bytes]) -> int:
    """``sluice maintain``: one JSON line per table and action on stdout; 1 when a commit failed."""
    from datetime import UTC, datetime

    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

    from sluice.tables import maintenance
    from sluice.tables.specs import TABLES
    from sluice.tables.warehouse import WarehouseSettings, open_catalog

    try:
        expire = (
            None
            if args.expire_older_than == "off"
            else maintenance.parse_duration(args.expire_older_than)
        )
        lateness = maintenance.parse_duration(args.lateness)
        orphan_min_age = maintenance.parse_duration(args.orphan_min_age)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.keep_last < 1 or (args.target_file_size is not None and args.target_file_size < 1):
        raise ConfigError("--keep-last and --target-file-size must be at least 1")
    settings = WarehouseSettings(**({"state_dir": args.state_dir} if args.state_dir else {}))
    now = datetime.now(UTC)
    if args.print_athena:
        statements = maintenance.athena_statements(
            settings.namespace,
            now,
            lateness=lateness,
            retain=expire or maintenance.parse_duration("7d"),
            keep_last=args.keep_last,
            hourly_tables=settings.hourly_tables,
        )
        out.write(("\n".join([*statements, maintenance.GLUE_NOTE]) + "\n").encode())
        return 0
    if args.remove_orphans and not settings.resolved_warehouse().startswith("file://"):
        raise ConfigError("--remove-orphans works on a local file:// warehouse only")
    catalog = open_catalog(settings)
    tables = {}
    for name in TABLES:
        try:
            tables[name] = catalog.load_table(f"{settings.namespace}.{name}")
        except NoSuchTableError:
            continue
    if not tables:
        raise ConfigError(f"no Sluice tables in namespace {settings.namespace!r}")
    options = maintenance.MaintenanceOptions(
        expire_older_than=expire,
        keep_last=args.keep_last,
        compact=args.compact,
        lateness=lateness,
        target_file_size=args.target_file_size,
        remove_orphans=args.remove_orphans,
        orphan_min_age=orphan_min_age,
        dry_run=args.dry_run,
    )
    try:
        results = maintenance.maintain(tables, options, now)
    except CommitFailedException as err:
        print(f"sluice: maintenance commit failed (a concurrent commit?): {err}", file=sys.stderr)
        return 1
    for result in results:
        out.write(orjson.dumps({"dry_run": args.dry_run, **result}) + b"\n")
    out.flush()
    return 0


def _run_dead_letters(args: argparse.Namespace, out: IO[bytes]) -> int:
    """``sluice dead-letters``: list (table or JSON lines), or ``--redrive`` (see sluice.tables.redrive)."""
    import logging
    import os

    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

    from sluice.core.contracts import ErrorType
    from sluice.core.errors import SluiceError
    from sluice.tables import redrive

    if args.reason is not None and args.reason not in {e.value for e in ErrorType}:
        raise ConfigError(
            f"unknown --reason {args.reason!r}; one of: {', '.join(e.value for e in ErrorType)}"
        )
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if not args.redrive and (args.log_format or args.dry_run or args.stream_name):
        raise ConfigError("--log-format, --stream-name and --dry-run apply to --redrive only")
    catalog, namespace = _warehouse(args)
    try:
        table = catalog.load_table(f"{namespace}.dead_letters")
    except NoSuchTableError:
        raise ConfigError(f"no dead_letters table in namespace {namespace!r}") from None
    letters = redrive.read_letters(table, reason=args.reason, source=args.source, limit=args.limit)
    if not args.redrive:
        columns = ["dead_letter_id", "source", "stage", "error_type", "message", "first_seen"]
        columns.append("raw")
        rows = [
            (
                d.dead_letter_id,
                d.source.value,
                d.stage,
                d.error_type.value,
                d.message if args.format == "json" else d.message[:60],
                d.first_seen.isoformat(),
                repr(d.raw[:60])[1:-1] + ("…" if len(d.raw) > 60 else ""),
            )
            for d in letters
        ]
        _write_rows(out, columns, rows, args.format)
        return 0
    settings = load_settings(log_format=args.log_format)
    stream_name = args.stream_name or os.environ.get("SLUICE_STREAM_NAME")
    if not stream_name and not args.dry_run:
        raise ConfigError("--redrive needs --stream-name or SLUICE_STREAM_NAME")

    def publish(envelopes: list[Any]) -> int:
        # The edges' publisher is an adapter (boto3): imported only here. Nothing goes to an
        # edge dead-letter destination: whatever the stream refuses fails the re-drive instead.
        from aws_lambda_powertools import Logger

        from edge_lambdas.shared.publisher import DeadLetterDeliveryError, KinesisPublisher

        class _Refuse:
            def write(self, undelivered: Sequence[Any]) -> None:
                raise DeadLetterDeliveryError(f"the stream refused {len(undelivered)} envelopes")

        logger = Logger(service="sluice-redrive", logger_handler=logging.StreamHandler(sys.stderr))
        report = KinesisPublisher(str(stream_name), _Refuse(), logger=logger).publish(envelopes)
        return report.sent - report.too_large

    try:
        result = redrive.redrive(table, letters, publish, log_format=settings.log_format,
                                 feeds=settings.feeds, dry_run=args.dry_run)  # fmt: skip
    except (redrive.RedriveError, CommitFailedException) as err:
        print(f"sluice: re-drive incomplete: {err}", file=sys.stderr)
        return 1
    except SluiceError as err:  # DeadLetterDeliveryError: the stream refused some envelopes
        if isinstance(err, ConfigError):
            raise
        print(f"sluice: re-drive incomplete, nothing removed: {err}", file=sys.stderr)
        return 1
    out.write(orjson.dumps(result.as_dict()) + b"\n")
    return 0


def _run_edge(action: str, argv: list[str]) -> int:
    """The edges are adapters (they use boto3), so they are imported only when asked for."""
    if action == "serve":
        from edge_lambdas.local_server import main as serve

        return serve(argv)
    from edge_lambdas.feed_poller.local import main as poll

    return poll(argv)


def _run_samples(args: argparse.Namespace, out: IO[bytes]) -> None:
    from devkit import samples

    if args.count < 0 or not 0 <= args.bad_ratio <= 1:
        raise ConfigError("--count must be >= 0 and --bad-ratio between 0 and 1")
    if args.kind == "geoip":
        if args.out is None:
            raise ConfigError("samples geoip needs --out DIRECTORY")
        from devkit.geoip_build import build_demo_databases

        for path in build_demo_databases(args.out):
            out.write(f"{path}\n".encode())
    elif args.kind == "iot":
        for message in samples.iot_messages(args.count, seed=args.seed, bad_ratio=args.bad_ratio):
            out.write(message + b"\n")
    elif args.kind == "weblog":
        for line in samples.access_log_lines(args.count, seed=args.seed, bad_ratio=args.bad_ratio):
            out.write(line.encode() + b"\n")
    else:
        out.write(samples.usgs_document(args.count, seed=args.seed) + b"\n")


def _iot_batches(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """NDJSON, or one JSON array document (as device captures often are)."""
    head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
    if head.lstrip()[:1] == b"[":
        document = stream.read()
        try:
            items = orjson.loads(document)
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, list):
            yield [orjson.dumps(item) for item in items]
            return
        yield document.splitlines()
        return
    yield from iter_line_batches(stream)


def _write(out: IO[bytes], records: Sequence[BaseModel]) -> None:
    if records:
        out.write(b"\n".join(r.model_dump_json().encode() for r in records) + b"\n")


def _run_parse(args: argparse.Namespace, out: IO[bytes], dead: IO[bytes]) -> dict[str, Any]:
    settings = load_settings(log_format=args.log_format, geoip_city_db=args.geoip_db,
                             geoip_asn_db=args.asn_db)  # fmt: skip
    if args.source != "weblog" and (args.geoip_db or args.asn_db or args.log_format):
        raise ConfigError(
            "--log-format, --geoip-db and --asn-db apply to 'sluice parse weblog' only"
        )
    if args.asn_db and not args.geoip_db:
        raise ConfigError("--asn-db needs --geoip-db")
    record_filter = RecordFilter(() if args.no_filters else settings.filter_rules, args.source)
    totals: dict[str, Any] = {"valid": 0, "dead_letters": 0}
    dropped: dict[str, int] = {}
    with ExitStack() as stack:
        enricher = None
        if settings.geoip_city_db is not None:
            from sluice.transform.geoip import GeoIpEnricher, choose_client_ip

            enricher = stack.enter_context(
                GeoIpEnricher(
                    settings.geoip_city_db, settings.geoip_asn_db, settings.geoip_cache_size
                )
            )
        log_parser = LogParser(settings.log_format) if args.source == "weblog" else None
        feed = builtin_feed(args.feed) if args.source == "feed" else None
        for name in args.files:
            stream = stack.enter_context(open_input(name))
            try:
                if feed is not None:
                    batches: Iterator[BatchResult[Any]] = iter(
                        [parse_feed_document(feed, stream.read())]
                    )
                elif log_parser is not None:
                    batches = (log_parser.parse_batch(b) for b in iter_line_batches(stream))
                else:
                    batches = (parse_iot_batch(b) for b in _iot_batches(stream))
                for result in batches:
                    valid = result.valid
                    if enricher is not None:
                        geos = enricher.lookup_many(
                            choose_client_ip(r.client_ip, r.forwarded_for) or "" for r in valid
                        )
                        valid = [
                            r.model_copy(update={"geo": g})
                            for r, g in zip(valid, geos, strict=True)
                        ]
                    filtered = record_filter.apply(valid)
                    for rule, count in filtered.dropped.items():
                        dropped[rule] = dropped.get(rule, 0) + count
                    _write(out, filtered.kept)
                    _write(dead, result.dead_letters)
                    totals["valid"] += len(filtered.kept)
                    totals["dead_letters"] += len(result.dead_letters)
            except (OSError, EOFError, zlib.error) as err:
                raise ConfigError(f"cannot read {name}: {err}") from None
    if dropped:
        totals["filtered"] = dropped
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tune_gc()
    out = sys.stdout.buffer
    try:
        if args.command == "query":
            return _run_query(args, out)
        if args.command == "tables":
            return _run_tables(args, out)
        if args.command == "job":
            # The job is an adapter (Beam, boto3): imported only when asked for.
            from beam_jobs.run import main as run_job

            return run_job(args.args)
        if args.command == "replay":
            from beam_jobs.replay import main as run_replay

            return run_replay(args.args)
        if args.command == "edge":
            return _run_edge(args.action, args.args)
        if args.command == "maintain":
            return _run_maintain(args, out)
        if args.command == "dead-letters":
            return _run_dead_letters(args, out)
        if args.command == "samples":
            _run_samples(args, out)
            out.flush()
            return 0
        with ExitStack() as stack:
            dead: IO[bytes] = sys.stderr.buffer
            if args.dead_letters is not None:
                try:
                    dead = stack.enter_context(open(args.dead_letters, "wb"))
                except OSError as err:
                    raise ConfigError(f"cannot write {args.dead_letters}: {err.strerror}") from None
            totals = _run_parse(args, out, dead)
            out.flush()
            dead.flush()
    except ConfigError as err:
        print(f"sluice: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    sys.stderr.buffer.write(orjson.dumps(totals) + b"\n")
    return 0
