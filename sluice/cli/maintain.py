"""``sluice maintain``: keep the tables healthy without changing any query result.

In: the catalog under ``--state-dir``; retention and compaction options.
Out: one JSON line per table and action on standard output; exit 1 when a commit failed (a
concurrent writer: run it again), 2 for unusable options. ``--print-athena`` prints the Athena
``OPTIMIZE``/``VACUUM`` statements for production instead.
Snapshots holding the job's exactly-once positions are never expired.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from sluice.cli.output import add_state_dir, warehouse_settings
from sluice.core.errors import ConfigError

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "maintain",
        help="expire snapshots, compact closed partitions, remove orphan files (keeps positions)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--expire-older-than",
        default="7d",
        help="expire snapshots older than this (e.g. 7d, 12h; default 7d); 'off' to skip",
    )
    parser.add_argument(
        "--keep-last", type=int, default=5, help="always keep this many newest snapshots (5)"
    )
    parser.add_argument(
        "--compact", action="store_true", help="rewrite small files of closed partitions"
    )
    parser.add_argument(
        "--lateness", default="10m", help="a partition is closed this long after its end (10m)"
    )
    parser.add_argument(
        "--target-file-size", type=int, help="compaction target bytes (table property if unset)"
    )
    parser.add_argument(
        "--remove-orphans", action="store_true", help="delete unreferenced files (file:// only)"
    )
    parser.add_argument(
        "--orphan-min-age", default="1d", help="only delete orphans older than this (default 1d)"
    )
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    parser.add_argument(
        "--print-athena",
        action="store_true",
        help="print the Athena OPTIMIZE/VACUUM statements for production and exit",
    )
    add_state_dir(parser)
    parser.set_defaults(handler=run, parser_of=parser)


def run(args: argparse.Namespace) -> int:
    settings = warehouse_settings(args)
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

    from sluice.tables import maintenance
    from sluice.tables.specs import TABLES
    from sluice.tables.warehouse import open_catalog

    out = sys.stdout.buffer
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
