"""The ``sluice`` command line: one parser, one module per command group.

In: the command line. Out: what the command writes; exit status 0 on success, 2 with one line on
standard error for anything Sluice refuses (unknown options, bad settings, unreadable files, a
missing extra), 1 where a command says so (a maintenance or re-drive commit that failed).
Only ``SluiceError`` is caught here: anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sluice import __version__
from sluice.cli import dead_letters, edge, job, maintain, parse, query, samples
from sluice.core.errors import SluiceError
from sluice.core.flags import ErrorParser, unknown_option
from sluice.core.runtime import tune_gc

__all__ = ["main"]

EXIT_USAGE = 2
DESCRIPTION = (
    "Sluice is a real-time analytics pipeline: Lambda edges write IoT readings, nginx access logs "
    "and polled JSON APIs to Kinesis, a Beam (or Flink) job validates, enriches and aggregates "
    "them, and Iceberg tables keep the results, and every rejected input as a dead letter, for "
    "analysts."
)
GROUPS = (parse, query, maintain, dead_letters, job, edge, samples)


def build_parser() -> argparse.ArgumentParser:
    parser = ErrorParser(
        prog="sluice",
        description=DESCRIPTION,
        epilog="Every command answers --help. Settings are also read from SLUICE_<NAME> variables.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(args_list)
        if rest and not getattr(args, "forwards", False):
            command: ErrorParser = args.parser_of
            raise unknown_option(rest[0], command.known_flags(), command.prog)
        tune_gc()
        code: int = (
            args.handler(args, rest) if getattr(args, "forwards", False) else args.handler(args)
        )
        return code
    except SluiceError as err:
        print(f"sluice: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
