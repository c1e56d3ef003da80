"""The ``sluice`` command line: one parser, one module per command group.

In: the command line. Out: what the command writes; exit status 0 on success, 2 with one line on
standard error for anything Sluice refuses (unknown options, bad settings, unreadable files, a
missing extra), 1 where a command says so (a maintenance or re-drive commit that failed).
Every failure is one line; ``--debug`` (anywhere on the line) adds the traceback. A ``SluiceError``
is a refusal and its message says what to fix; any other exception is reported as unexpected, with
the innermost ``SluiceError`` it wraps when there is one (Beam wraps a worker's errors in its own).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from sluice import __version__
from sluice.cli import (
    cost,
    dead_letters,
    deploy,
    edge,
    flink,
    job,
    maintain,
    parse,
    query,
    samples,
    status,
)
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
GROUPS = (parse, query, status, maintain, dead_letters, job, edge, flink, samples, cost, deploy)


def build_parser() -> argparse.ArgumentParser:
    parser = ErrorParser(
        prog="sluice",
        description=DESCRIPTION,
        epilog="Every command answers --help. Settings are also read from SLUICE_<NAME> variables. "
        "--debug (anywhere) prints the traceback of a failure.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
    for group in GROUPS:
        group.register(commands)
    return parser


def _wrapped_refusal(error: BaseException) -> SluiceError | None:
    """The ``SluiceError`` an exception was raised from or during, if any (innermost first found)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, SluiceError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    args_list = [a for a in args_list if a != "--debug"]
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
    except BrokenPipeError:
        return 0
    except SluiceError as err:
        if debug:
            traceback.print_exc()
        print(f"sluice: {_first_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - every failure is one line; --debug shows the rest
        if debug:
            traceback.print_exc()
        refusal = _wrapped_refusal(err)
        if refusal is not None:
            print(f"sluice: {_first_line(refusal)}", file=sys.stderr)
        else:
            print(
                f"sluice: unexpected {type(err).__name__}: {_first_line(err)} "
                "(run again with --debug for the traceback)",
                file=sys.stderr,
            )
        return EXIT_USAGE
