"""``make demo``: the whole pipeline on a laptop, through the real edges, stream job and tables.

1. Start a local AWS endpoint (moto server, a subprocess on a free loopback port) and create the
   stream, buckets and checkpoint table.
2. Send generated input through the real Lambda handlers: IoT readings over HTTP to the local API
   (some malformed, some late within the allowed lateness, some too late), an nginx access log
   uploaded to S3 and announced with an S3 event, and a USGS-style feed served over local HTTP and
   polled by the feed poller.
3. Run the stream job (``sluice job run``) until the stream is drained; it logs its commits.
4. Print what analysts see, with DuckDB over the Iceberg tables.
5. Stop every process it started.

A GeoIP database can be given with ``--geoip-db``/``--asn-db``; otherwise a generated, synthetic demo
database is used (made-up networks, not real geolocation).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.server
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from devkit import samples
from infra.local.stack import LocalAws, Resources, client, create_resources

WORKDIR = Path(".demo")


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def send_iot(url: str, count: int, now: datetime) -> dict[str, int]:
    """Readings in requests of 500 NDJSON lines, plus late, too-late and malformed ones."""
    totals = {"accepted": 0, "rejected": 0}
    # Spread over the last three minutes, so the windows are on time (lateness: 10 minutes).
    spread = 180.0
    messages = list(
        samples.iot_messages(
            count,
            bad_ratio=0.01,
            start=now - timedelta(seconds=spread),
            interval=spread / max(count, 1),
        )
    )
    late = samples.iot_messages(40, seed=99, bad_ratio=0.0, start=now - timedelta(minutes=5))
    too_late = samples.iot_messages(20, seed=98, bad_ratio=0.0, start=now - timedelta(minutes=30))
    messages += [*late, *too_late]
    for i in range(0, len(messages), 500):
        body = b"\n".join(messages[i : i + 500])
        request = urllib.request.Request(
            f"{url}/iot", data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            summary = orjson.loads(response.read())
        totals["accepted"] += summary["accepted"]
        totals["rejected"] += summary["rejected"]
    return totals


def send_access_log(
    env: dict[str, str], resources: Resources, count: int, now: datetime
) -> dict[str, Any]:
    """Upload a gzip access log to S3 and hand the S3 event to the log handler."""
    from edge_lambdas.log_ingest.handler import lambda_handler
    from edge_lambdas.shared.events import LocalContext, s3_object_created_event

    lines = samples.access_log_lines(
        count, bad_ratio=0.01, start=now - timedelta(seconds=count * 0.02)
    )
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    key = f"nginx/{now:%Y/%m/%d/%H%M}-web-1.access.log.gz"
    client("s3", env).put_object(Bucket=resources.log_bucket, Key=key, Body=body)
    result: dict[str, Any] = lambda_handler(
        s3_object_created_event(resources.log_bucket, key, len(body)), LocalContext()
    )
    return result


class _FeedHandler(http.server.BaseHTTPRequestHandler):
    document = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("ETag", '"demo-1"')
        self.send_header("Content-Length", str(len(self.document)))
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args: Any) -> None:
        pass


def poll_feed(now: datetime, count: int) -> dict[str, Any]:
    """Serve a USGS-style document on a local port and run the real poller against it once."""
    _FeedHandler.document = samples.usgs_document(count, start=now - timedelta(seconds=37 * count))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FeedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from sluice.parsing.feeds import USGS_EARTHQUAKES

        spec = USGS_EARTHQUAKES.model_copy(
            update={"url": f"http://127.0.0.1:{server.server_port}/all_hour.geojson"}
        )
        os.environ["SLUICE_FEEDS"] = orjson.dumps([spec.model_dump(mode="json")]).decode()
        from edge_lambdas.feed_poller.handler import lambda_handler
        from edge_lambdas.shared.events import LocalContext

        result: dict[str, Any] = lambda_handler({}, LocalContext(timeout_seconds=120))
        return result
    finally:
        server.shutdown()
        server.server_close()


def run_job(env: dict[str, str], args: argparse.Namespace, geoip: tuple[Path, Path | None]) -> int:
    command = [
        sys.executable, "-m", "sluice", "job", "run",
        "--stop-when-idle", "4",
        "--commit_interval_seconds", "3",
        "--state_dir", str(WORKDIR / "state"),
        "--geoip_city_db", str(geoip[0]),
    ]  # fmt: skip
    if geoip[1] is not None:
        command += ["--geoip_asn_db", str(geoip[1])]
    process = subprocess.run(command, env={**os.environ, **env}, check=False)
    return process.returncode


ANALYST_QUERIES = {
    "Top paths by requests": """
        SELECT path, sum(requests) AS requests, sum(bytes) AS bytes,
               round(max(request_time_p95), 3) AS worst_p95_s
        FROM web_traffic_1m GROUP BY path ORDER BY requests DESC LIMIT 8""",
    "Requests by country": """
        SELECT coalesce(nullif(country_iso, ''), '(unknown)') AS country, sum(requests) AS requests
        FROM web_traffic_1m GROUP BY 1 ORDER BY requests DESC LIMIT 10""",
    "Device metrics (all windows)": """
        SELECT metric, count(DISTINCT device_id) AS devices, sum(count) AS readings,
               round(sum(sum) / sum(count), 2) AS mean, round(min(min), 2) AS min,
               round(max(max), 2) AS max, round(avg(p95), 2) AS avg_p95
        FROM iot_metrics_1m GROUP BY metric ORDER BY metric""",
    "Earthquakes by magnitude band": """
        SELECT floor(CAST(fields['mag'] AS DOUBLE)) AS magnitude, count(*) AS quakes
        FROM feed_items GROUP BY 1 ORDER BY 1""",
    "Dead letters by source and reason": """
        SELECT source, error_type, count(*) AS dead_letters FROM dead_letters
        GROUP BY 1, 2 ORDER BY 3 DESC""",
    "Rows per table": """
        SELECT 'iot_readings' AS tbl, count(*) AS n FROM iot_readings
        UNION ALL SELECT 'web_requests', count(*) FROM web_requests
        UNION ALL SELECT 'feed_items', count(*) FROM feed_items
        UNION ALL SELECT 'iot_metrics_1m', count(*) FROM iot_metrics_1m
        UNION ALL SELECT 'web_traffic_1m', count(*) FROM web_traffic_1m
        UNION ALL SELECT 'dead_letters', count(*) FROM dead_letters""",
}


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [
        [str(c) for c in columns],
        *[["" if v is None else str(v) for v in row] for row in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        print(
            "  " + "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
        )
        if n == 0:
            print("  " + "  ".join("-" * width for width in widths))


def show_tables(state_dir: Path) -> None:
    from sluice.analysts.query import run
    from sluice.tables.warehouse import WarehouseSettings, open_catalog

    settings = WarehouseSettings(state_dir=state_dir)
    catalog = open_catalog(settings)
    for title, sql in ANALYST_QUERIES.items():
        columns, rows = run(catalog, settings.namespace, sql)
        print(f"\n{title}")
        print_table(columns, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iot", type=int, default=20_000, help="IoT readings to send (20000)")
    parser.add_argument("--log-lines", type=int, default=20_000, help="access-log lines (20000)")
    parser.add_argument("--quakes", type=int, default=200, help="feed items (200)")
    parser.add_argument("--geoip-db", type=Path, help="your MaxMind City database (default: demo)")
    parser.add_argument("--asn-db", type=Path, help="your MaxMind ASN database")
    args = parser.parse_args(argv)
    random.seed(7)
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    started = time.monotonic()

    step("Starting a local AWS endpoint (moto server) and creating the stream, buckets and table")
    aws = LocalAws(WORKDIR / "aws").start()
    try:
        aws.apply_env()
        resources = create_resources(aws.env)
        os.environ.update({
            "POWERTOOLS_LOG_LEVEL": "WARNING",  # the edges' INFO lines would drown the demo's output
            "SLUICE_STREAM_NAME": resources.stream,
            "SLUICE_DEAD_LETTER_BUCKET": resources.dead_letter_bucket,
            "SLUICE_CHECKPOINT_TABLE": resources.checkpoint_table,
        })  # fmt: skip
        print(f"    endpoint {aws.endpoint}, stream {resources.stream} ({resources.shards} shards)")

        if args.geoip_db:
            geoip: tuple[Path, Path | None] = (args.geoip_db, args.asn_db)
            print(f"    GeoIP: {args.geoip_db}")
        else:
            from devkit.geoip_build import build_demo_databases

            geoip = build_demo_databases(WORKDIR / "geoip")
            print(
                "    GeoIP: a generated SYNTHETIC demo database (made-up networks; use --geoip-db for real ones)"
            )

        now = datetime.now(UTC)
        edge_log = (WORKDIR / "edges.log").open("w")
        print(f"    the edges' own logs and EMF metrics go to {WORKDIR / 'edges.log'}")
        step(
            f"Sending {args.iot} IoT readings over HTTP to the IoT edge (+ late, too-late, malformed)"
        )
        from edge_lambdas.local_server import create_server

        edge = create_server(0, quiet=True)
        threading.Thread(target=edge.serve_forever, daemon=True).start()
        try:
            with contextlib.redirect_stdout(edge_log):
                sent = send_iot(edge.url, args.iot, now)
            print(f"    {sent}")
        finally:
            edge.shutdown()
            edge.server_close()

        step(f"Uploading an nginx access log of {args.log_lines} lines to S3 for the log edge")
        with contextlib.redirect_stdout(edge_log):
            result = send_access_log(aws.env, resources, args.log_lines, now)
        print(f"    {orjson.dumps(result).decode()[:300]}")

        step(f"Polling a USGS-style feed of {args.quakes} earthquakes with the feed poller")
        with contextlib.redirect_stdout(edge_log):
            polled = poll_feed(now, args.quakes)
        print(f"    {orjson.dumps(polled).decode()[:300]}")

        step("Running the stream job until the stream is drained (Kinesis -> Beam -> Iceberg)")
        if run_job(aws.env, args, geoip) != 0:
            print("the stream job failed", file=sys.stderr)
            return 1

        step("What analysts see (DuckDB over the Iceberg tables)")
        show_tables(WORKDIR / "state")
    finally:
        aws.stop()
    print(f"\nDone in {time.monotonic() - started:.0f} s. Tables: {WORKDIR / 'state'}; try:")
    print(
        f"  .venv/bin/sluice query --state-dir {WORKDIR / 'state'} 'SELECT * FROM dead_letters LIMIT 5'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
