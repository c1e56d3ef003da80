"""Run the feed poller once from a shell (``sluice edge poll``), outside Lambda.

In: the same settings as the Lambda (``SLUICE_*`` environment variables, see ``settings``), plus
options: which feeds, where checkpoints live (DynamoDB, or memory for a dry run that remembers
nothing) and where envelopes go (the Kinesis stream, or an NDJSON file / standard output).
Out: one JSON summary line per feed (pages fetched, new items, duplicates skipped, not modified,
dead letters, error) on standard output, or on standard error when envelopes go to standard output.
Exit status: 0 when every feed was polled (a 304 or a busy lease counts as polled), 1 when a feed
failed, 2 for unusable options or settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from edge_lambdas.feed_poller.handler import build_emitter, build_poller, select_feeds
from edge_lambdas.feed_poller.settings import load_poller_settings
from sluice.core.contracts import Envelope
from sluice.core.errors import ConfigError
from sluice.edges.polling import CheckpointStore, Emit, InMemoryCheckpointStore
from sluice.stream.envelopes import encode

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice edge poll", description="Poll the configured JSON APIs once."
    )
    parser.add_argument(
        "--feed",
        action="append",
        dest="feeds",
        metavar="NAME",
        help="poll only this configured feed (repeatable; default: every feed in SLUICE_FEEDS)",
    )
    parser.add_argument(
        "--checkpoints",
        choices=("dynamodb", "memory"),
        default="dynamodb",
        help="dynamodb: the checkpoint table (default); memory: start from nothing, keep nothing",
    )
    parser.add_argument("--table", help="checkpoint table (default: SLUICE_CHECKPOINT_TABLE)")
    parser.add_argument("--stream", help="Kinesis stream (default: SLUICE_STREAM_NAME)")
    parser.add_argument(
        "--out",
        help="write envelopes as JSON lines to this file (- for standard output) instead of Kinesis",
    )
    return parser


def _file_emitter(stream: IO[bytes]) -> Emit:
    def emit(envelopes: list[Envelope]) -> None:
        stream.write(b"".join(encode(envelope) + b"\n" for envelope in envelopes))
        stream.flush()

    return emit


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s"
    )
    out_file: IO[bytes] | None = None
    try:
        settings = load_poller_settings(checkpoint_table=args.table, stream_name=args.stream)
        feeds = select_feeds(settings.feeds, args.feeds)
        if args.out == "-":
            emit = _file_emitter(sys.stdout.buffer)
        elif args.out:
            out_file = Path(args.out).open("ab")  # noqa: SIM115 - closed in finally
            emit = _file_emitter(out_file)
        else:
            emit = build_emitter(settings)
        store: CheckpointStore | None = (
            InMemoryCheckpointStore() if args.checkpoints == "memory" else None
        )
        poller = build_poller(settings, emit=emit, store=store)
    except (ConfigError, OSError) as err:
        if out_file is not None:
            out_file.close()
        print(f"sluice edge poll: {err}", file=sys.stderr)
        return EXIT_USAGE
    summaries_to = sys.stderr if args.out == "-" else sys.stdout
    try:
        summaries = poller.poll_all(feeds)
    finally:
        if out_file is not None:
            out_file.close()
    for summary in summaries:
        print(orjson.dumps(summary.as_dict()).decode(), file=summaries_to, flush=True)
    return EXIT_FAILED if any(s.status == "failed" for s in summaries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
