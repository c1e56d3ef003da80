"""``sluice dead-letters``: list the dead letters, or re-drive those that parse now.

In: the ``dead_letters`` table under ``--state-dir``; filters by reason and source.
Out: the letters as a table or JSON lines; with ``--redrive``, one JSON summary line: the letters
that parse with today's configuration are published to the stream with deterministic event ids,
then removed from the table in one commit (a crash in between re-sends the same ids, which the job
drops). Exit 1 when the re-drive could not finish (nothing is lost: run it again).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from sluice.cli.output import add_state_dir, open_tables, write_rows
from sluice.core.config import load_settings
from sluice.core.contracts import ErrorType, Source
from sluice.core.errors import ConfigError, SluiceError
from sluice.core.extras import require

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dead-letters",
        help="list dead letters; --redrive re-submits those that parse now and removes them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reason",
        choices=[e.value for e in ErrorType],
        metavar="REASON",
        help=f"only this error type: {', '.join(e.value for e in ErrorType)}",
    )
    parser.add_argument("--source", choices=[s.value for s in Source], help="only this source")
    parser.add_argument("--limit", type=int, help="at most this many (oldest first)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="(table)")
    add_state_dir(parser)
    parser.add_argument(
        "--redrive",
        action="store_true",
        help="re-try the selected letters with today's configuration, publish those that pass to "
        "the stream, then delete them from the table (one JSON summary line on stdout)",
    )
    parser.add_argument(
        "--log-format", help="redrive: weblog format (default: SLUICE_LOG_FORMAT or auto)"
    )
    parser.add_argument(
        "--stream-name", help="redrive: Kinesis stream (default: SLUICE_STREAM_NAME)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="redrive: report what would happen, change nothing"
    )
    parser.set_defaults(handler=run, parser_of=parser)


def run(args: argparse.Namespace) -> int:
    require("tables", "pyiceberg", "pyarrow")
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

    from sluice.tables import redrive

    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if not args.redrive and (args.log_format or args.dry_run or args.stream_name):
        raise ConfigError("--log-format, --stream-name and --dry-run apply to --redrive only")
    catalog, namespace = open_tables(args)
    try:
        table = catalog.load_table(f"{namespace}.dead_letters")
    except NoSuchTableError:
        raise ConfigError(f"no dead_letters table in namespace {namespace!r}") from None
    letters = redrive.read_letters(table, reason=args.reason, source=args.source, limit=args.limit)
    out = sys.stdout.buffer
    if not args.redrive:
        columns = ["dead_letter_id", "source", "stage", "error_type", "message", "first_seen"]
        columns.append("raw")
        rows = [
            (
                d.dead_letter_id,
                d.source.value,
                d.stage.value,
                d.error_type.value,
                d.message if args.format == "json" else d.message[:60],
                d.first_seen.isoformat(),
                repr(d.raw[:60])[1:-1] + ("…" if len(d.raw) > 60 else ""),
            )
            for d in letters
        ]
        write_rows(out, columns, rows, args.format)
        return 0
    settings = load_settings(log_format=args.log_format)
    stream_name = args.stream_name or os.environ.get("SLUICE_STREAM_NAME")
    if not stream_name and not args.dry_run:
        raise ConfigError("--redrive needs --stream-name or SLUICE_STREAM_NAME")
    if not args.dry_run:
        require("edges", "boto3", "aws_lambda_powertools")

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
