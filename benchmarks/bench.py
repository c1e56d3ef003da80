"""``make bench``: the core stages side by side with DuckDB and Flink SQL, one run, on seeded input.

Usage: ``python -m benchmarks.bench [--sizes 1000000,5000000] [--json FILE] [--no-job]``
(``make bench``; ``BENCH_SIZES=1000000 make bench`` for the 1M size alone).

What runs, for each size N (every measured thing in a process of its own, so its peak RSS is its own):
- input, seeded and written once per size: N IoT readings in the canonical shape (NDJSON, the
  same generator and seed as ``benchmarks.flink_sql``), N nginx access-log lines with a realistic
  address and path mix (Zipf-distributed over 20,000 client addresses of the demo GeoIP networks
  and private ranges, 2,000 paths, query strings, bots; combined format), and feed items
  (USGS-style documents of 1,000 items; ``--feed-events`` of them, default min(N, 200,000));
- core IoT: the file read in line batches, ``parse_iot_columns`` and ``aggregate_iot_columns``
  (1-minute windows) per batch; core weblog: ``LogParser.parse_batch`` (its bulk path) and
  ``GeoIpEnricher.enrich`` (demo databases, cache on) per batch, then ``aggregate_web``;
  core feed: ``parse_feed_document``. Rates are events per CPU second of that process (per core);
- DuckDB 1 thread on the same IoT file: ``read_json`` + GROUP BY device, minute (count, avg, min,
  max, p95); no extension is installed or loaded from the network;
- Flink SQL (``benchmarks.flink_sql``, .venv-flink): steady events/s, start-up separately;
- the Beam job at each size (``benchmarks.job``): end to end from moto Kinesis (a pre-filled
  backlog, KPL-aggregated as the edges write it) to committed Iceberg tables, then ``sluice replay``
  of the raw archive it wrote (the file path): events/s (wall), peak RSS of the job process,
  event-to-queryable latency p50/p99, ratios to DuckDB and Flink SQL of the same size.
Targets print as PASS/FAIL: goals for the code, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLINK_PYTHON = ROOT / ".venv-flink" / "bin" / "python"
START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TARGETS = {
    "core IoT >= 500k events/s per core": ("iot", 500_000),
    "nginx parse + GeoIP (cached, realistic mix) >= 300k lines/s per core": ("weblog_geo", 300_000),
}


# --- inputs ------------------------------------------------------------------------------------


def write_iot(path: Path, count: int) -> int:
    """``count`` canonical readings (what ``benchmarks.flink_sql`` writes, same seed)."""
    from benchmarks.flink_sql import write_readings

    return write_readings(path, count)


def _addresses(rng: random.Random, count: int) -> list[str]:
    import ipaddress

    from devkit.geoip_build import DEMO_NETWORKS

    networks = [ipaddress.ip_network(n.network) for n in DEMO_NETWORKS]
    out = []
    for i in range(count):
        if i % 20 == 0:
            out.append(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
            continue
        net = rng.choice(networks)
        out.append(str(net.network_address + rng.randrange(min(net.num_addresses, 1 << 16))))
    return out


def nginx_lines(count: int, seed: int = 5) -> Iterator[str]:
    """Combined-format lines: Zipf-like address and path popularity, as real traffic has."""
    rng = random.Random(seed)
    addresses = _addresses(rng, 20_000)
    paths = ["/", "/healthz", *(f"/products/{i}" for i in range(1200)),
             *(f"/api/v1/items/{i}" for i in range(600)), *(f"/blog/post-{i}" for i in range(197))]  # fmt: skip
    agents = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "curl/8.5.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    )
    statuses = (200, 200, 200, 200, 200, 200, 304, 301, 404, 500)
    address_weights = [1 / (rank + 1) ** 1.1 for rank in range(len(addresses))]
    path_weights = [1 / (rank + 1) for rank in range(len(paths))]
    chunk = 10_000
    for first in range(0, count, chunk):
        n = min(chunk, count - first)
        clients = rng.choices(addresses, address_weights, k=n)
        picked = rng.choices(paths, path_weights, k=n)
        for k in range(n):
            i = first + k
            at = (START + timedelta(seconds=i * 0.01)).strftime("%d/%b/%Y:%H:%M:%S +0000")
            path = picked[k]
            if rng.random() < 0.15:
                path += f"?q={rng.randint(1, 5000)}&page={rng.randint(1, 9)}"
            yield (
                f'{clients[k]} - - [{at}] "GET {path} HTTP/1.1" {rng.choice(statuses)} '
                f'{rng.randint(0, 80_000)} "-" "{rng.choice(agents)}"'
            )


def write_nginx(path: Path, count: int) -> int:
    with path.open("w") as out:
        batch: list[str] = []
        for line in nginx_lines(count):
            batch.append(line)
            if len(batch) == 50_000:
                out.write("\n".join(batch) + "\n")
                batch = []
        if batch:
            out.write("\n".join(batch) + "\n")
    return count


# --- workers (each run as its own process) ------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: ``ru_maxrss`` would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_iot(path: Path) -> dict[str, Any]:
    from sluice.core.inputs import MAX_RECORD_BYTES, iter_line_batches
    from sluice.parsing.iot_columns import parse_iot_columns
    from sluice.transform.aggregate import aggregate_iot_columns

    events = keys = 0
    parse_cpu = aggregate_cpu = 0.0
    started = _cpu()
    wall = time.perf_counter()
    with path.open("rb") as stream:
        for batch in iter_line_batches(stream, MAX_RECORD_BYTES):
            t0 = _cpu()
            parsed = parse_iot_columns(batch.lines)
            t1 = _cpu()
            keys += len(aggregate_iot_columns(parsed.columns))
            aggregate_cpu += _cpu() - t1
            parse_cpu += t1 - t0
            events += len(parsed.columns)
    cpu = _cpu() - started
    return {"events": events, "cpu_seconds": cpu, "wall_seconds": time.perf_counter() - wall,
            "parse_cpu_seconds": parse_cpu, "aggregate_cpu_seconds": aggregate_cpu,
            "window_keys": keys, "peak_rss_mb": _peak_mb()}  # fmt: skip


def worker_iot_reference(path: Path, limit: int) -> dict[str, Any]:
    """Today's record path (``parse_iot_batch`` + ``aggregate_iot`` on models), on the first
    ``limit`` lines: the "before" figure."""
    from itertools import islice

    from sluice.parsing.iot import parse_iot_batch
    from sluice.transform.aggregate import aggregate_iot

    with path.open("rb") as stream:
        lines = [line.rstrip(b"\n") for line in islice(stream, limit)]
    started = _cpu()
    for i in range(0, len(lines), 10_000):
        aggregate_iot(parse_iot_batch(lines[i : i + 10_000]).valid)
    return {"events": len(lines), "cpu_seconds": _cpu() - started, "peak_rss_mb": _peak_mb()}


def worker_weblog(path: Path, *, mode: str = "columns", limit: int | None = None) -> dict[str, Any]:
    """nginx parse + GeoIP + aggregate per batch. ``mode``: ``columns``, the columnar core
    (``parse_weblog_columns``, ``lookup_clients``, ``aggregate_web_columns``); ``records``, the
    record API over the same stages (``parse_batch``, ``enrich``, ``aggregate_web``: what a caller
    that needs records pays); ``before``, the path before the bulk one (``parse_raw`` per line,
    ``lookup_many`` and ``model_copy`` per record). ``limit`` stops after the batch that reaches
    that many lines (a rate needs no more)."""
    from devkit.geoip_build import build_demo_databases
    from sluice.core.contracts import DEFAULT_HORIZON
    from sluice.core.deadletters import Rejection
    from sluice.core.inputs import iter_line_batches
    from sluice.parsing.weblog import MAX_LINE_BYTES, LogParser
    from sluice.parsing.weblog.columns import parse_weblog_columns
    from sluice.transform.aggregate import aggregate_web, aggregate_web_columns
    from sluice.transform.geoip import GeoIpEnricher, choose_client_ip

    parser = LogParser("combined")
    events = 0
    parse_cpu = geo_cpu = aggregate_cpu = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        city, asn = build_demo_databases(tmp)
        with GeoIpEnricher(city, asn) as enricher, path.open("rb") as stream:
            started = _cpu()
            for batch in iter_line_batches(stream, MAX_LINE_BYTES):
                t0 = _cpu()
                if mode == "columns":
                    columns = parse_weblog_columns(parser, batch.lines).columns
                    size = len(columns)
                    t1 = _cpu()
                    geos = enricher.lookup_clients(columns.client_ip, columns.forwarded_for)
                    t2 = _cpu()
                    aggregate_web_columns(columns, geos)
                else:
                    if mode == "records":
                        records = parser.parse_batch(batch.lines).valid
                    else:
                        context = DEFAULT_HORIZON.context()
                        outcomes = [parser.parse_raw(line, context) for line in batch.lines]
                        records = [
                            r for r in outcomes if r is not None and type(r) is not Rejection
                        ]
                    size = len(records)
                    t1 = _cpu()
                    if mode == "records":
                        enriched = enricher.enrich(records)
                    else:
                        geos = enricher.lookup_many(
                            [choose_client_ip(r.client_ip, r.forwarded_for) or "" for r in records]
                        )
                        enriched = [
                            r.model_copy(update={"geo": g})
                            for r, g in zip(records, geos, strict=True)
                        ]
                    t2 = _cpu()
                    aggregate_web(enriched)
                aggregate_cpu += _cpu() - t2
                parse_cpu += t1 - t0
                geo_cpu += t2 - t1
                events += size
                if limit is not None and events >= limit:
                    break
            cpu = _cpu() - started
    return {"events": events, "cpu_seconds": cpu, "parse_cpu_seconds": parse_cpu,
            "geoip_cpu_seconds": geo_cpu, "aggregate_cpu_seconds": aggregate_cpu,
            "peak_rss_mb": _peak_mb()}  # fmt: skip


def worker_feed(count: int) -> dict[str, Any]:
    from devkit import samples
    from sluice.parsing.feeds import USGS_EARTHQUAKES, parse_feed_document

    per_document = 1000
    now = START + timedelta(days=30)
    events = 0
    cpu = 0.0
    for seed in range(max(1, count // per_document)):
        document = samples.usgs_document(per_document, seed=seed, start=START)
        t0 = _cpu()
        events += len(parse_feed_document(USGS_EARTHQUAKES, document, now=now).valid)
        cpu += _cpu() - t0
    return {"events": events, "cpu_seconds": cpu, "peak_rss_mb": _peak_mb()}


def worker_duckdb(path: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(config={"threads": 1, "autoinstall_known_extensions": False})
    count = con.execute(f"SELECT count(*) FROM read_json('{path}', format = 'newline_delimited')")
    events = count.fetchone()[0]  # type: ignore[index]
    started, wall = _cpu(), time.perf_counter()
    rows = con.execute(
        f"""
        SELECT device_id, time_bucket(INTERVAL 1 MINUTE, CAST(event_time AS TIMESTAMPTZ)) AS minute,
               count(*), avg(metrics.temperature), min(metrics.temperature),
               max(metrics.temperature), quantile_cont(metrics.temperature, 0.95)
        FROM read_json('{path}', format = 'newline_delimited')
        GROUP BY ALL
        """
    ).fetchall()
    return {"events": events, "groups": len(rows), "wall_seconds": time.perf_counter() - wall,
            "cpu_seconds": _cpu() - started, "peak_rss_mb": _peak_mb()}  # fmt: skip


WORKERS = {"iot": worker_iot, "weblog": worker_weblog, "duckdb": worker_duckdb}


def run_worker(kind: str, *args: str, timeout: float = 3600) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench", "--worker", kind, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- references ---------------------------------------------------------------------------------


def run_flink(path: Path, events: int) -> dict[str, Any]:
    if not FLINK_PYTHON.exists():
        return {"error": "not run: no .venv-flink (make flink-venv)"}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "benchmarks.flink_sql", "--input", str(path),
                   "--events", str(events), "--json", out.name]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"error": "not run: over 30 minutes"}
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
        return result


def job_timeout(events: int) -> float:
    """The bound on one ``benchmarks.job`` run (fill, job, replay): ~12 min per million, 15 min least."""
    return max(900.0, events * 7.2e-4)


def run_job(events: int, timeout: float) -> dict[str, Any]:
    """``benchmarks.job`` at ``events``: the Beam job end to end from moto Kinesis, then ``sluice
    replay`` over its archive; its JSON (``job``, ``replay``), or ``error``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            sys.executable,
            "-m",
            "benchmarks.job",
            "--events",
            str(events),
            "--json",
            out.name,
        ]
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, cwd=ROOT
            )
        except subprocess.TimeoutExpired:
            return {"error": f"not measured: over the {timeout:.0f} s bound", "events": events}
        text = Path(out.name).read_text()
        if done.returncode != 0 or not text:
            return {"error": (done.stderr.strip().splitlines() or ["no figure"])[-1][:200],
                    "events": events}  # fmt: skip
        result: dict[str, Any] = json.loads(text)
        result["wall_seconds"] = round(time.perf_counter() - started)
        return result


# --- the run ------------------------------------------------------------------------------------


def _rate(result: dict[str, Any], seconds_key: str = "cpu_seconds") -> float | None:
    seconds = result.get(seconds_key)
    return result["events"] / seconds if seconds else None


def bench_size(n: int, feed_events: int, scratch: Path) -> dict[str, Any]:
    iot_file, nginx_file = scratch / f"iot-{n}.ndjson", scratch / f"nginx-{n}.log"
    t0 = time.perf_counter()
    write_iot(iot_file, n)
    write_nginx(nginx_file, n)
    print(f"  inputs for {n:,}: {time.perf_counter() - t0:.0f} s "
          f"(IoT {iot_file.stat().st_size / 1e6:.0f} MB)", flush=True)  # fmt: skip
    out: dict[str, Any] = {"events": n, "iot_input_mb": round(iot_file.stat().st_size / 1e6, 1)}
    out["iot"] = run_worker("iot", str(iot_file))
    out["iot_before"] = run_worker("iot_reference", str(iot_file), str(min(n, 200_000)))
    out["weblog"] = run_worker("weblog", str(nginx_file))
    out["weblog_records"] = run_worker("weblog_records", str(nginx_file), str(min(n, 1_000_000)))
    out["weblog_before"] = run_worker("weblog_reference", str(nginx_file), str(min(n, 1_000_000)))
    out["feed"] = run_worker("feed", str(feed_events))
    out["duckdb"] = run_worker("duckdb", str(iot_file))
    out["flink_sql"] = run_flink(iot_file, n)
    for path in (iot_file, nginx_file):
        path.unlink()
    return out


def ratio(ours: float | None, reference: float | None) -> str:
    if not (ours and reference):
        return "-"
    return f"{ours / reference:.2f}x" if ours >= 0.1 * reference else f"{ours / reference:.3f}x"


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def _job_rows(
    n: int, result: dict[str, Any] | None, duck_rate: float | None, flink_rate: float | None
) -> tuple[list[tuple[str, str, str, str, str]], dict[str, Any]]:
    """The table rows and JSON figures of ``benchmarks.job`` at size ``n`` (job, then replay)."""
    if result is None:
        return [], {}
    if "error" in result:
        return [(f"{n:,}", f"Beam job end to end: {result['error']}", "-", "", "")], {}
    rows: list[tuple[str, str, str, str, str]] = []
    figures: dict[str, Any] = {}
    for key, what in (("job", "Beam job end to end (moto Kinesis -> Iceberg, wall)"),
                      ("replay", "  sluice replay of its archive (file -> Iceberg, wall)")):  # fmt: skip
        part = result.get(key)
        if not part:
            continue
        rate, latency = part.get("events_per_second"), part.get("latency") or {}
        figures[f"beam_{key}_events_per_second"] = rate
        figures[f"beam_{key}_peak_rss_mb"] = part.get("peak_rss_mb")
        figures[f"beam_{key}_latency_p50_seconds"] = latency.get("p50_seconds")
        figures[f"beam_{key}_latency_p99_seconds"] = latency.get("p99_seconds")
        figures[f"beam_{key}_vs_duckdb"] = rate / duck_rate if rate and duck_rate else None
        figures[f"beam_{key}_vs_flink_sql"] = rate / flink_rate if rate and flink_rate else None
        exit_note = "" if part.get("exit_code") == 0 else f" (exit {part.get('exit_code')})"
        rows += [
            (f"{n:,}", what + exit_note, _fmt(rate), ratio(rate, duck_rate), ratio(rate, flink_rate)),
            (f"{n:,}", "    peak RSS (MB); event-to-queryable p50 / p99 (s)",
             f"{_fmt(part.get('peak_rss_mb'))}; {latency.get('p50_seconds', '-')} / "
             f"{latency.get('p99_seconds', '-')}", "", ""),
        ]  # fmt: skip
    return rows, figures


def _job_verdicts(summary: dict[str, Any], sizes: Sequence[int]) -> dict[str, str]:
    """The Beam job's targets: peak RSS at the largest size under 1 GB and at most 1.2x that at
    the smallest, events/s at least Flink SQL's steady rate."""
    verdicts: dict[str, str] = {}
    big, small = summary[str(max(sizes))], summary[str(min(sizes))]
    hi, lo = big.get("beam_job_peak_rss_mb"), small.get("beam_job_peak_rss_mb")
    verdicts[f"Beam job peak RSS draining {max(sizes):,} < 1 GB"] = (
        f"{'PASS' if hi and hi < 1024 else 'FAIL'} ({_fmt(hi)} MB)"
    )
    if len(sizes) >= 2:
        ok = lo and hi and hi <= 1.2 * lo
        verdicts[f"Beam job peak RSS at {max(sizes):,} <= 1.2x that at {min(sizes):,}"] = (
            f"{'PASS' if ok else 'FAIL'} ({_fmt(hi)} MB vs {_fmt(lo)} MB)"
        )
    vs = big.get("beam_job_vs_flink_sql")
    verdicts["Beam job end to end >= 1.0x Flink SQL steady"] = (
        f"{'PASS' if vs >= 1.0 else 'FAIL'} ({vs:.3f}x)" if vs else "not measured (no Flink SQL)"
    )
    return verdicts


def report(sizes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    rows: list[tuple[str, str, str, str, str]] = []
    summary: dict[str, Any] = {}
    for n, r in sizes.items():
        iot, web = r["iot"], r["weblog"]
        duck, flink = r["duckdb"], r["flink_sql"]
        iot_rate = _rate(iot) if "error" not in iot else None
        web_geo, web_records, web_before = (
            w["events"] / (w["parse_cpu_seconds"] + w["geoip_cpu_seconds"])
            if "error" not in w else None
            for w in (web, r.get("weblog_records", {"error": ""}),
                      r.get("weblog_before", {"error": ""})))  # fmt: skip
        duck_rate = _rate(duck) if "error" not in duck else None  # 1 thread: per core
        flink_rate = flink.get("steady_events_per_second")
        figures = {
            "iot_events_per_cpu_second": iot_rate,
            "iot_parse_events_per_cpu_second": _rate(iot, "parse_cpu_seconds"),
            "iot_before_events_per_cpu_second": _rate(r["iot_before"]),
            "weblog_parse_geoip_lines_per_cpu_second": web_geo,
            "weblog_parse_lines_per_cpu_second": _rate(web, "parse_cpu_seconds"),
            "weblog_geoip_lines_per_cpu_second": _rate(web, "geoip_cpu_seconds"),
            "weblog_records_parse_geoip_lines_per_cpu_second": web_records,
            "weblog_before_parse_geoip_lines_per_cpu_second": web_before,
            "weblog_with_aggregate_lines_per_cpu_second": _rate(web)
            if "error" not in web
            else None,
            "feed_items_per_cpu_second": _rate(r["feed"]) if "error" not in r["feed"] else None,
            "duckdb_events_per_second": duck_rate,
            "flink_sql_steady_events_per_second": flink_rate,
            "flink_sql_job_startup_seconds": flink.get("job_startup_seconds"),
            "flink_sql_cluster_start_seconds": flink.get("cluster_start_seconds"),
            "iot_peak_rss_mb": iot.get("peak_rss_mb"),
            "weblog_peak_rss_mb": web.get("peak_rss_mb"),
        }
        summary[str(n)] = figures
        rows += [
            (f"{n:,}", "core IoT (parse_iot_columns + aggregate, per core)", _fmt(iot_rate),
             ratio(iot_rate, duck_rate), ratio(iot_rate, flink_rate)),
            (f"{n:,}", "  of which parse alone", _fmt(figures["iot_parse_events_per_cpu_second"]), "", ""),
            (f"{n:,}", "  record path: parse_iot_batch + aggregate_iot (200k)",
             _fmt(figures["iot_before_events_per_cpu_second"]),
             ratio(figures["iot_before_events_per_cpu_second"], duck_rate),
             ratio(figures["iot_before_events_per_cpu_second"], flink_rate)),
            (f"{n:,}", "nginx parse + GeoIP, columns (cached, realistic mix, per core)", _fmt(web_geo), "", ""),
            (f"{n:,}", "  parse alone / GeoIP alone",
             f"{_fmt(figures['weblog_parse_lines_per_cpu_second'])} / "
             f"{_fmt(figures['weblog_geoip_lines_per_cpu_second'])}", "", ""),
            (f"{n:,}", "  + aggregate_web_columns", _fmt(figures["weblog_with_aggregate_lines_per_cpu_second"]), "", ""),
            (f"{n:,}", "  record API: parse_batch + enrich (first 1M)", _fmt(web_records), "", ""),
            (f"{n:,}", "  before the bulk path (parse_raw per line, model_copy)", _fmt(web_before),
             "", ""),
            (f"{n:,}", f"feed items ({r['feed'].get('events', 0):,}, per core)",
             _fmt(figures["feed_items_per_cpu_second"]), "", ""),
            (f"{n:,}", "DuckDB 1 thread, read_json + GROUP BY (per core)", _fmt(duck_rate), "1.00x", ratio(duck_rate, flink_rate)),
            (f"{n:,}", "Flink SQL p=1 steady, wall (start-up "
             f"{_fmt(flink.get('job_startup_seconds'), ' s')}, cluster "
             f"{_fmt(flink.get('cluster_start_seconds'), ' s')})" if flink_rate else
             f"Flink SQL p=1: {flink.get('error', '-')}", _fmt(flink_rate), ratio(flink_rate, duck_rate), "1.00x" if flink_rate else "-"),
            (f"{n:,}", "peak RSS: core IoT / weblog / DuckDB (MB)",
             f"{_fmt(iot.get('peak_rss_mb'))} / {_fmt(web.get('peak_rss_mb'))} / {_fmt(duck.get('peak_rss_mb'))}", "", ""),
        ]  # fmt: skip
        job_rows, job_figures = _job_rows(n, r.get("beam_job"), duck_rate, flink_rate)
        rows += job_rows
        figures.update(job_figures)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    header = ("events", "what", "events/s", "vs DuckDB", "vs Flink SQL")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))  # fmt: skip
    verdicts: dict[str, str] = {}
    largest = summary[str(max(sizes))]
    for name, (kind, goal) in TARGETS.items():
        figure = largest["iot_events_per_cpu_second" if kind == "iot"
                         else "weblog_parse_geoip_lines_per_cpu_second"]  # fmt: skip
        verdicts[name] = f"{'PASS' if figure and figure >= goal else 'FAIL'} ({_fmt(figure)})"
    if len(sizes) >= 2:
        small, big = summary[str(min(sizes))], largest
        for label, key in (("core IoT", "iot_peak_rss_mb"), ("weblog", "weblog_peak_rss_mb")):
            lo, hi = small.get(key), big.get(key)
            ok = lo and hi and hi <= 1.2 * lo
            verdicts[f"{label} peak RSS at {max(sizes):,} <= 1.2x that at {min(sizes):,}"] = (
                f"{'PASS' if ok else 'FAIL'} ({_fmt(hi)} MB vs {_fmt(lo)} MB)"
            )
    else:
        verdicts["peak RSS at 5M <= 1.2x that at 1M"] = "not measured (one size)"
    if any("beam_job_peak_rss_mb" in summary[str(n)] for n in sizes):
        verdicts.update(_job_verdicts(summary, sorted(sizes)))
    for name, verdict in verdicts.items():
        print(f"{verdict.split()[0]:<5} {name}: {' '.join(verdict.split()[1:])}")
    return {"sizes": summary, "targets": verdicts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "1000000,5000000"))
    parser.add_argument("--feed-events", type=int, default=0, help="default: min(N, 200000)")
    parser.add_argument("--no-job", action="store_true", help="do not run the Beam job")
    parser.add_argument("--job-timeout", type=float, help="default: job_timeout(size)")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--report", type=Path, help="print the table of an earlier run's JSON (its raw figures)"
    )
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        from sluice.core.runtime import tune_gc

        tune_gc()  # as the CLI and the job do at start-up
        if args.worker == "feed":
            result = worker_feed(int(rest[0]))
        elif args.worker == "iot_reference":
            result = worker_iot_reference(Path(rest[0]), int(rest[1]))
        elif args.worker in ("weblog_records", "weblog_reference"):
            mode = "records" if args.worker == "weblog_records" else "before"
            result = worker_weblog(Path(rest[0]), mode=mode, limit=int(rest[1]))
        else:
            result = WORKERS[args.worker](Path(rest[0]))
        print(json.dumps(result))
        return 0
    if args.report:
        earlier = json.loads(args.report.read_text())
        report({int(n): r for n, r in earlier["raw"].items()})
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    started = time.perf_counter()
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as scratch:
        for n in sizes:
            print(f"size {n:,}", flush=True)
            results[n] = bench_size(n, args.feed_events or min(n, 200_000), Path(scratch))
            if not args.no_job:
                t0 = time.perf_counter()
                results[n]["beam_job"] = run_job(n, args.job_timeout or job_timeout(n))
                print(f"  Beam job + replay at {n:,}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary = report(results)
    summary["raw"] = {str(n): r for n, r in results.items()}
    summary["seconds"] = round(time.perf_counter() - started)
    summary["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"make bench: {summary['seconds']} s; {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
