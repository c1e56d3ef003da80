"""``sluice status``: rates, lag, last commit per table and dead letters by reason of a local run.

In: the tables under ``--state-dir`` (``sluice.analysts.status`` computes the figures).
Out: the figures as text tables, or one JSON document (``--format json``). With ``--serve``, a
small HTML page on http://127.0.0.1:PORT/ (charts of events per minute per source, dead letters by
reason, window metrics, last commit per table; ``/status.json`` is the same figures as JSON) that
re-reads the tables every ``--refresh`` seconds, until interrupted. Loopback only; the page loads
nothing from anywhere else.
A state folder without a catalog, or a catalog without tables: one line, exit 2 (nothing created).
"""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson

from sluice.cli.output import add_state_dir, warehouse_settings, write_rows
from sluice.core.errors import ConfigError
from sluice.core.extras import require

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from sluice.analysts.status import Status

__all__ = ["register"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535: {value}")
    return value


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "status",
        help="rates, lag, last commit per table, dead letters by reason; --serve: an HTML page",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output (table)"
    )
    parser.add_argument(
        "--minutes", type=_positive, default=60, help="minutes per per-minute series (60)"
    )
    parser.add_argument(
        "--serve", action="store_true", help="serve the figures as an HTML page on 127.0.0.1"
    )
    parser.add_argument(
        "--port", type=_port, default=8642, help="port of --serve (8642; 0: any free port)"
    )
    parser.add_argument(
        "--refresh", type=_positive, default=10, help="seconds between page refreshes (10)"
    )
    add_state_dir(parser)
    parser.set_defaults(handler=run_status, parser_of=parser)


def _open(args: argparse.Namespace) -> tuple[Catalog, str]:
    """The catalog, refusing a local state folder that holds none (instead of creating one)."""
    require("query", "duckdb", "pyiceberg", "pyarrow")
    from sqlalchemy.exc import SQLAlchemyError

    from sluice.tables.catalog import open_catalog

    settings = warehouse_settings(args)
    if settings.catalog == "sql" and settings.catalog_uri is None:
        database = settings.state_dir / "catalog.db"
        if not database.is_file():
            raise ConfigError(
                f"no catalog at {database}: run the pipeline first (sluice job run, make demo) "
                "or point --state-dir at its state folder"
            )
    try:
        return open_catalog(settings), settings.namespace
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise ConfigError(
            f"cannot open the catalog {settings.resolved_catalog_uri()}: "
            f"{reason[0] if reason else type(err).__name__}"
        ) from err


def _figures(catalog: Catalog, namespace: str, minutes: int) -> Status:
    from sluice.analysts.status import StatusError, status

    try:
        return status(catalog, namespace, datetime.now(UTC), minutes)
    except StatusError as err:
        raise ConfigError(f"status failed: {err}") from err


def run_status(args: argparse.Namespace) -> int:
    catalog, namespace = _open(args)
    figures = _figures(catalog, namespace, args.minutes)  # refuses bad tables before serving
    if args.serve:
        return _serve(catalog, namespace, args)
    out = sys.stdout.buffer
    if args.format == "json":
        out.write(orjson.dumps(figures.as_dict()) + b"\n")
        return 0
    _print_text(out, figures)
    return 0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _print_text(out: Any, s: Status) -> None:
    out.write(f"status at {_iso(s.generated_at)}\n\nsources\n".encode())
    write_rows(
        out,
        ["source", "table", "events", "per_minute", "lag_s", "edge_to_table_s", "newest_ingest"],
        [
            (
                x.source,
                x.table,
                x.events,
                round(x.rate_per_minute, 1),
                _rounded(x.lag_seconds),
                _rounded(x.commit_delay_seconds),
                _iso(x.newest_ingest),
            )
            for x in s.sources
        ],
        "table",
    )
    out.write(b"\nlast commit per table\n")
    write_rows(
        out,
        [
            "table",
            "rows",
            "snapshots",
            "last_commit",
            "operation",
            "rows_added",
            "age_s",
            "positions",
        ],
        [
            (
                t.table,
                t.rows,
                t.snapshots,
                _iso(t.last_commit),
                t.last_operation,
                t.rows_added,
                _rounded(t.commit_age_seconds),
                ", ".join(f"{k}: {v}" for k, v in t.positions.items()) or None,
            )
            for t in s.tables
        ],
        "table",
    )
    resume = ", ".join(f"{k}: {v}" for k, v in s.resume_positions.items()) or "none recorded"
    out.write(f"resume positions (the smallest over the tables): {resume}\n".encode())
    out.write(b"\ndead letters by reason\n")
    write_rows(
        out,
        ["source", "stage", "reason", "count"],
        [(d.source, d.stage, d.reason, d.count) for d in s.dead_letters],
        "table",
    )


def _serve(catalog: Catalog, namespace: str, args: argparse.Namespace) -> int:
    from sluice.analysts.status import StatusError
    from sluice.cli.status_page import render_page

    lock = threading.Lock()  # one reading of the tables at a time (a catalog is not thread-safe)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in ("/", "/index.html", "/status.json"):
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
                return
            try:
                with lock:
                    data = _figures(catalog, namespace, args.minutes).as_dict()
            except (ConfigError, StatusError) as err:
                self._send(500, "text/plain; charset=utf-8", f"{err}\n".encode())
                return
            if path == "/status.json":
                self._send(200, "application/json", orjson.dumps(data))
            else:
                page = render_page(data, args.refresh).encode()
                self._send(200, "text/html; charset=utf-8", page)

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: Any) -> None:
            pass  # the page polls; one line per request would bury everything else

    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as err:
        raise ConfigError(
            f"cannot serve on 127.0.0.1:{args.port}: {err.strerror or err}; choose another --port"
        ) from None
    print(f"serving http://127.0.0.1:{server.server_port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
