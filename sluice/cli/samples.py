"""``sluice samples iot|weblog|feed|geoip``: generated input for demos and tests.

Out: IoT readings (NDJSON), nginx access-log lines or a USGS-style feed document on standard output,
with a share of deliberately bad inputs; ``geoip`` writes the SYNTHETIC demo City and ASN databases
(made-up networks, not real geolocation) into ``--out``. The generators are development helpers
(``devkit``), not part of any deployed artifact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sluice.core.errors import ConfigError

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "samples",
        help="write generated sample input (for demos and tests)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=("iot", "weblog", "feed", "geoip"), help="what to write")
    parser.add_argument("--count", type=int, default=1000, help="how many records (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--bad-ratio", type=float, default=0.01, help="share of bad inputs (0.01)")
    parser.add_argument("--out", type=Path, help="geoip: directory for the demo .mmdb files")
    parser.set_defaults(handler=run, parser_of=parser)


def run(args: argparse.Namespace) -> int:
    try:
        from devkit import samples
    except ImportError:
        raise ConfigError(
            "sluice samples needs the development helpers (devkit/): run it from a checkout"
        ) from None
    out = sys.stdout.buffer
    if args.count < 0 or not 0 <= args.bad_ratio <= 1:
        raise ConfigError("--count must be >= 0 and --bad-ratio between 0 and 1")
    if args.kind == "geoip":
        if args.out is None:
            raise ConfigError("samples geoip needs --out DIRECTORY")
        from sluice.core.extras import require

        require("dev", "mmdb_writer", "netaddr")
        from devkit.geoip_build import build_demo_databases

        for path in build_demo_databases(args.out):
            out.write(f"{path}\n".encode())
    elif args.kind == "iot":
        for message in samples.iot_messages(args.count, seed=args.seed, bad_ratio=args.bad_ratio):
            out.write(message + b"\n")
    elif args.kind == "weblog":
        for line in samples.access_log_lines(args.count, seed=args.seed, bad_ratio=args.bad_ratio):
            out.write(line.encode() + b"\n")
    else:
        out.write(samples.usgs_document(args.count, seed=args.seed) + b"\n")
    out.flush()
    return 0
