"""``sluice parse iot|weblog|feed [FILES or -]``: raw input to normalized JSON lines, offline.

In: files (gzip detected) or standard input; the core settings (``SLUICE_LOG_FORMAT``, GeoIP
databases, filter rules), overridable by flags.
Out: valid normalized records as JSON lines on standard output; dead letters as JSON lines to
``--dead-letters FILE`` (default: standard error); as the last line on standard error a JSON summary
``{"valid": N, "dead_letters": M}`` (plus ``"filtered": {rule: count}`` when rules dropped records).
Exit status 0 when the input was read, even if records were rejected.
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

from sluice.core.config import load_settings
from sluice.core.deadletters import BatchResult
from sluice.core.errors import ConfigError
from sluice.core.inputs import iter_line_batches, open_input
from sluice.parsing.feeds import builtin_feed, parse_feed_document
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.transform.filters import RecordFilter

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "parse",
        help="parse raw IoT, access-log or feed input into normalized JSON lines (offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", choices=("iot", "weblog", "feed"), help="kind of input")
    parser.add_argument(
        "files", nargs="*", default=["-"], help="input files (gzip detected), - for stdin (default)"
    )
    parser.add_argument(
        "--log-format",
        help="weblog: 'auto', 'combined', 'main' or an nginx log_format (env SLUICE_LOG_FORMAT; "
        "default: auto)",
    )
    parser.add_argument(
        "--feed", default="usgs", help="feed: the built-in feed spec (default: usgs)"
    )
    parser.add_argument("--geoip-db", type=Path, help="weblog: MaxMind City/Country database")
    parser.add_argument("--asn-db", type=Path, help="weblog: MaxMind ASN database")
    parser.add_argument("--no-filters", action="store_true", help="do not apply the filter rules")
    parser.add_argument("--dead-letters", type=Path, help="file for dead letters (default: stderr)")
    parser.set_defaults(handler=run, parser_of=parser)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    with ExitStack() as stack:
        dead: IO[bytes] = sys.stderr.buffer
        if args.dead_letters is not None:
            try:
                dead = stack.enter_context(open(args.dead_letters, "wb"))
            except OSError as err:
                raise ConfigError(f"cannot write {args.dead_letters}: {err.strerror}") from None
        totals = _parse(args, out, dead)
        out.flush()
        dead.flush()
    sys.stderr.buffer.write(orjson.dumps(totals) + b"\n")
    return 0


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


def _parse(args: argparse.Namespace, out: IO[bytes], dead: IO[bytes]) -> dict[str, Any]:
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
