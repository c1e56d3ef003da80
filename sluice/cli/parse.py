"""``sluice parse iot|weblog|feed [FILES or -]``: raw input to normalized JSON lines, offline.

In: files (gzip detected) or standard input; the core settings (``SLUICE_LOG_FORMAT``, GeoIP
databases, filter rules), overridable by flags.
Out: valid normalized records as JSON lines on standard output; dead letters as JSON lines to
``--dead-letters FILE`` (default: standard error); as the last line on standard error a JSON summary
``{"valid": N, "rejected": R, "skipped": S, "dead_letters": M}``: records written, inputs rejected
(each has a dead letter, or is counted in a ``too_many_errors`` summary once a batch has more than
``SLUICE_MAX_DEAD_LETTERS`` rejections), blank lines skipped, dead letters written (plus
``"filtered": {rule: count}`` when rules dropped records). Event times outside the horizon
(``SLUICE_MAX_FUTURE_SECONDS`` past the time of the run, ``SLUICE_MIN_EVENT_TIME``) are
``invalid_timestamp`` dead letters, as at the edges and in the job.
Exit status 0 when the input was read, even if records were rejected.

Every read is bounded while it happens: lines are read in chunks, a line over the record limit
(``sluice.core.inputs.MAX_RECORD_BYTES`` for iot, ``sluice.parsing.weblog.MAX_LINE_BYTES`` for
weblog) is read past and becomes one ``too_large`` dead letter with its first bytes and real size,
and the rest of the file is parsed; blank lines are skipped. A whole document (an iot JSON array,
a feed response) is read up to ``MAX_ARRAY_DOCUMENT_BYTES`` / ``sluice.parsing.feeds.
MAX_DOCUMENT_BYTES`` (64 MiB each); a bigger one is one ``too_large`` dead letter (its first bytes,
its real size), not an error, so the other files of the run are still parsed.
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import BaseModel

from sluice.core.config import load_settings
from sluice.core.contracts import DeadLetter, ErrorType, Source, Stage
from sluice.core.deadletters import BatchResult, dead_letter
from sluice.core.errors import ConfigError
from sluice.core.inputs import (
    DEFAULT_BATCH,
    MAX_RECORD_BYTES,
    iter_line_batches,
    json_array_elements,
    open_input,
    read_bounded,
)
from sluice.parsing.feeds import MAX_DOCUMENT_BYTES, FeedSpec, builtin_feed, parse_feed_document
from sluice.parsing.feeds_file import load_feeds_file, select_feed
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.iot_columns import IotColumns, parse_iot_columns
from sluice.parsing.weblog import MAX_LINE_BYTES, LogParser
from sluice.transform.filters import RecordFilter

__all__ = ["register"]

MAX_ARRAY_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Largest iot JSON array document read whole; a bigger one is one ``too_large`` dead letter."""

ParseBatch = Callable[[Iterable[bytes | str]], BatchResult[Any]]


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
        "--feed",
        help="feed: the feed spec by name: from --feed-spec, else from the configured feeds "
        "(SLUICE_FEEDS, SLUICE_FEEDS_FILE), else built in (default: usgs; with --feed-spec, the "
        "file's only feed)",
    )
    parser.add_argument(
        "--feed-spec",
        type=Path,
        metavar="FEEDS_FILE",
        help='feed: a feeds file, {"feeds": [spec, ...]} in JSON or YAML (as SLUICE_FEEDS_FILE)',
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


def _too_large(
    source: Source, what: str, cut: bytes, size: int, limit: int, identity: tuple[object, ...]
) -> DeadLetter:
    """Only ``cut`` was kept of an input of ``size`` bytes: the letter still tells the real size."""
    letter = dead_letter(
        source, Stage.PARSE, ErrorType.TOO_LARGE, f"{what}: {size} bytes > {limit}", cut,
        identity=identity,
    )  # fmt: skip
    return letter.model_copy(update={"raw_size": size, "raw_truncated": True})


def _line_results(
    stream: IO[bytes], name: str, source: Source, parse: ParseBatch, limit: int, head: bytes = b""
) -> Iterator[BatchResult[Any]]:
    """Line by line: each over-long line is one ``too_large`` letter; blank lines are skipped."""
    for batch in iter_line_batches(stream, limit, head=head):
        result = parse(batch.lines)
        too_long = [
            _too_large(source, f"{name} line {line.number}", line.head, line.size, limit,
                       (name, line.number))
            for line in batch.oversized
        ]  # fmt: skip
        yield BatchResult(
            result.valid,
            [*result.dead_letters, *too_long],
            skipped=result.skipped + batch.blank,
            suppressed=result.suppressed,
            missing_metrics=result.missing_metrics,
        )


def _iot_results(stream: IO[bytes], name: str, parse_iot: ParseBatch) -> Iterator[BatchResult[Any]]:
    """NDJSON, or one JSON array document (as device captures often are)."""
    peek = getattr(stream, "peek", None)
    start = peek(64)[:64] if peek is not None else b""
    if start.lstrip()[:1] != b"[":
        yield from _line_results(stream, name, Source.IOT, parse_iot, MAX_RECORD_BYTES)
        return
    head = stream.read(MAX_ARRAY_DOCUMENT_BYTES + 1)
    if len(head) > MAX_ARRAY_DOCUMENT_BYTES and _first_line_is_json(head):
        # NDJSON whose lines are arrays of readings: read on as lines.
        yield from _line_results(stream, name, Source.IOT, parse_iot, MAX_RECORD_BYTES, head=head)
        return
    document = read_bounded(stream, MAX_ARRAY_DOCUMENT_BYTES, head=head)
    del head
    if not document.complete:
        yield BatchResult(
            [],
            [
                _too_large(Source.IOT, f"{name}: JSON array document", document.data,
                           document.size, MAX_ARRAY_DOCUMENT_BYTES, (name,))
            ],
        )  # fmt: skip
        return
    try:
        elements = json_array_elements(document.data.decode("utf-8"))
    except UnicodeDecodeError:
        elements = None
    if elements is None:  # not one JSON array after all: its lines are the records
        yield from _line_results(
            io.BytesIO(document.data), name, Source.IOT, parse_iot, MAX_RECORD_BYTES
        )
        return
    del document  # the elements hold the decoded text; the bytes are no longer needed
    while batch := list(islice(elements, DEFAULT_BATCH)):
        yield parse_iot(batch)


def _first_line_is_json(head: bytes) -> bool:
    text = head.lstrip()
    newline = text.find(b"\n")
    if newline < 0:
        return False
    try:
        orjson.loads(text[:newline])
    except orjson.JSONDecodeError:
        return False
    return True


def _feed_results(
    stream: IO[bytes], name: str, parse_feed: Callable[[bytes], BatchResult[Any]]
) -> Iterator[BatchResult[Any]]:
    document = read_bounded(stream, MAX_DOCUMENT_BYTES)
    if document.complete:
        yield parse_feed(document.data)
    else:
        letter = _too_large(Source.FEED, f"{name}: feed document", document.data, document.size,
                            MAX_DOCUMENT_BYTES, (name,))  # fmt: skip
        yield BatchResult([], [letter])


def _feed_spec(args: argparse.Namespace, configured: tuple[FeedSpec, ...]) -> FeedSpec:
    if args.feed_spec is not None:
        return select_feed(
            load_feeds_file(args.feed_spec), args.feed, f"feeds file {args.feed_spec}"
        )
    name = args.feed or "usgs"
    for spec in configured:
        if spec.name == name:
            return spec
    return builtin_feed(name)


def _iot_columnar(batch: Iterable[bytes | str], **options: Any) -> BatchResult[Any]:
    """``parse_iot_columns`` as a ``BatchResult`` whose ``valid`` is the ``IotColumns`` (written as
    JSON lines straight from the columns: no model per reading)."""
    parsed = parse_iot_columns(batch, **options)
    return BatchResult(
        parsed.columns,  # type: ignore[arg-type]
        list(parsed.dead_letters),
        skipped=parsed.skipped,
        suppressed=dict(parsed.suppressed),
        missing_metrics=parsed.missing_metrics,
    )


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
    if args.source != "feed" and (args.feed or args.feed_spec):
        raise ConfigError("--feed and --feed-spec apply to 'sluice parse feed' only")
    if args.asn_db and not args.geoip_db:
        raise ConfigError("--asn-db needs --geoip-db")
    record_filter = RecordFilter(() if args.no_filters else settings.filter_rules, args.source)
    # The horizon's "now" is the time of each batch's parse (the parsers' default), as at the edges.
    bounds: dict[str, Any] = {
        "horizon": settings.time_horizon(),
        "max_dead_letters": settings.max_dead_letters,
    }
    totals: dict[str, Any] = {"valid": 0, "rejected": 0, "skipped": 0, "dead_letters": 0}
    dropped: dict[str, int] = {}
    missing = 0
    with ExitStack() as stack:
        enricher = None
        if settings.geoip_city_db is not None:
            from sluice.transform.geoip import GeoIpEnricher

            enricher = stack.enter_context(
                GeoIpEnricher(
                    settings.geoip_city_db, settings.geoip_asn_db, settings.geoip_cache_size
                )
            )
        log_parser = LogParser(settings.log_format) if args.source == "weblog" else None
        feed = _feed_spec(args, settings.feeds) if args.source == "feed" else None
        # Without IoT filter rules the readings never become models: columns in, JSON lines out.
        parse_iot = functools.partial(
            parse_iot_batch if record_filter else _iot_columnar,
            sentinels=settings.sentinels(),
            **bounds,
        )
        for name in args.files:
            stream = stack.enter_context(open_input(name))
            try:
                if feed is not None:
                    parse_feed = functools.partial(parse_feed_document, feed, **bounds)
                    batches = _feed_results(stream, name, parse_feed)
                elif log_parser is not None:
                    parse_lines = functools.partial(log_parser.parse_batch, **bounds)
                    batches = _line_results(
                        stream, name, Source.WEBLOG, parse_lines, MAX_LINE_BYTES
                    )
                else:
                    batches = _iot_results(stream, name, parse_iot)
                for result in batches:
                    valid = result.valid
                    if isinstance(valid, IotColumns):
                        out.write(valid.json_lines())
                        _write(dead, result.dead_letters)
                        totals["valid"] += len(valid)
                        totals["rejected"] += result.rejected
                        totals["skipped"] += result.skipped
                        totals["dead_letters"] += len(result.dead_letters)
                        missing += result.missing_metrics
                        continue
                    if enricher is not None:
                        valid = enricher.enrich(valid)
                    filtered = record_filter.apply(valid)
                    for rule, count in filtered.dropped.items():
                        dropped[rule] = dropped.get(rule, 0) + count
                    _write(out, filtered.kept)
                    _write(dead, result.dead_letters)
                    totals["valid"] += len(filtered.kept)
                    totals["rejected"] += result.rejected
                    totals["skipped"] += result.skipped
                    totals["dead_letters"] += len(result.dead_letters)
                    missing += result.missing_metrics
            except (OSError, EOFError, zlib.error) as err:
                raise ConfigError(f"cannot read {name}: {err}") from None
    if dropped:
        totals["filtered"] = dropped
    if missing:
        totals["missing_metrics"] = missing
    return totals
