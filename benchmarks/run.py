"""Measure the core stages on generated input and print events/s per stage (one process, one core).

Usage: ``python -m benchmarks.run [--events N] [--json FILE]``. Each stage is timed best-of-3 on
pre-built input, so only the stage itself is measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from devkit import samples
from devkit.geoip_build import build_demo_databases
from sluice.core.runtime import tune_gc
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import decode_envelopes, encode, wrap_reading
from sluice.transform.aggregate import aggregate_iot, aggregate_web
from sluice.transform.filters import DEFAULT_RULES, RecordFilter
from sluice.transform.geoip import GeoIpEnricher, choose_client_ip


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    tune_gc()
    n = args.events
    results: dict[str, float] = {}

    def stage(name: str, count: int, fn: Callable[[], Any]) -> None:
        seconds = best_of(3, fn)
        results[name] = count / seconds
        print(f"{name:<40} {count / seconds:>12,.0f} events/s", flush=True)

    iot_mixed = list(samples.iot_messages(n, bad_ratio=0.0))
    readings = parse_iot_batch(iot_mixed).valid
    canonical = [r.model_dump_json().encode() for r in readings]
    wire = [encode(wrap_reading(r)) for r in readings]
    stage("iot: parse, mixed device shapes", n, lambda: parse_iot_batch(iot_mixed))
    stage("iot: parse, canonical shape", n, lambda: parse_iot_batch(canonical))
    stage("iot: decode envelopes", n, lambda: decode_envelopes(wire))
    stage("iot: aggregate 1-minute windows", n, lambda: aggregate_iot(readings))

    lines = [line.encode() for line in samples.access_log_lines(n, bad_ratio=0.0)]
    log_parser = LogParser("auto")
    records = log_parser.parse_batch(lines).valid
    stage("weblog: parse (auto format)", n, lambda: log_parser.parse_batch(lines))
    with tempfile.TemporaryDirectory() as tmp:
        city, asn = build_demo_databases(tmp)
        with GeoIpEnricher(city, asn) as enricher:
            ips = [choose_client_ip(r.client_ip, r.forwarded_for) or "" for r in records]
            stage("weblog: GeoIP lookup_many (cached)", len(ips), lambda: enricher.lookup_many(ips))
            geos = enricher.lookup_many(ips)
    enriched = [r.model_copy(update={"geo": g}) for r, g in zip(records, geos, strict=True)]
    record_filter = RecordFilter(DEFAULT_RULES, "weblog")
    stage("weblog: filters (defaults)", len(enriched), lambda: record_filter.apply(enriched))
    stage("weblog: aggregate 1-minute windows", len(enriched), lambda: aggregate_web(enriched))

    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
