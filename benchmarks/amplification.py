"""Measure dead-letter amplification: what one hostile body within the limits costs an edge.

Usage: ``python -m benchmarks.amplification [--case iot|logs] [--tracemalloc]``. The input is 1 MiB of
``1\\n`` lines (524,288 lines, each a valid JSON number but no reading, and no log line): the IoT
edge gets it as one request body, the log edge as one file. Printed (one JSON object): wall time,
the process's peak resident memory above what it held before the run (``ru_maxrss``), with
``--tracemalloc`` Python's own allocation peak instead (slower: use it apart from the timing), the
number of envelopes and dead letters, and the bytes of envelopes that would be sent to Kinesis.
Run each case in its own process: ``ru_maxrss`` only ever grows.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
import tracemalloc
from typing import Any

import orjson

from sluice.edges.ingest import IotRequest, ingest_iot_request, read_log_stream
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import encode, wrap_dead_letter

BODY = b"1\n" * (512 * 1024)
"""1 MiB: 524,288 lines of ``1``."""


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_iot() -> dict[str, Any]:
    outcome = ingest_iot_request(IotRequest(body=BODY, content_type="application/x-ndjson"))
    return {
        "status": outcome.status,
        "envelopes": len(outcome.envelopes),
        "dead_letters": len(outcome.dead_letters),
        "envelope_bytes": sum(len(encode(e)) for e in outcome.envelopes),
    }


def run_logs() -> dict[str, Any]:
    envelopes = letters = size = 0
    for batch in read_log_stream(io.BytesIO(BODY), "file:amplification.log", LogParser("auto")):
        envelopes += len(batch.valid) + len(batch.dead_letters)
        letters += len(batch.dead_letters)
        size += sum(len(encode(e)) for e in batch.valid)
        size += sum(len(encode(wrap_dead_letter(letter))) for letter in batch.dead_letters)
    return {"envelopes": envelopes, "dead_letters": letters, "envelope_bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=("iot", "logs"), default="iot")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    run = run_iot if args.case == "iot" else run_logs
    before = _peak_rss_kib()
    if args.tracemalloc:
        tracemalloc.start()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {"case": args.case, "body_bytes": len(BODY), **result}
    report["seconds"] = round(seconds, 3)
    if args.tracemalloc:
        report["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    else:
        report["peak_rss_growth_mib"] = round((_peak_rss_kib() - before) / 1024, 1)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
