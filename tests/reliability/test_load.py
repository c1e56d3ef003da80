"""Load test of ``sluice edge serve`` from a separate process on loopback, at 4 and 200 connections.

The edge server (a process) publishes to moto; the load client (another process, ``load_client``:
Python threads with keep-alive connections, one reading per request) reports requests/s, events/s,
error rate and p50/p99 latency; every reading the edge accepted (202) must then be on the stream
(read back directly, matched by message id). wrk is not used: it is not installed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from edges import EdgeServer, aws_env, create_stack
from kinesis_reader import read_stream
from report import FAIL, PASS, Result, measure

from infra.local.stack import client

HERE = Path(__file__).resolve().parent
SECONDS = {"smoke": 2.0, "short": 4.0, "full": 60.0}
CONNECTIONS = {"smoke": (4,), "short": (4, 200), "full": (4, 200)}


def test_load_of_the_local_edge_server(moto_endpoint: str, tmp_path: Path, scale: str) -> None:
    result = Result("load", "Load test of sluice edge serve")
    with measure(result):
        env = aws_env(moto_endpoint)
        for connections in CONNECTIONS[scale]:
            stream, bucket = create_stack(env)
            edge = EdgeServer(env, stream, bucket, tmp_path / f"edge-{connections}.log").start()
            tag = f"load{connections}-{uuid.uuid4().hex[:6]}"
            try:
                done = subprocess.run(
                    [sys.executable, str(HERE / "load_client.py"), edge.url, str(connections),
                     str(SECONDS[scale]), tag],
                    capture_output=True, timeout=SECONDS[scale] * 4 + 300, check=True,
                )  # fmt: skip
            finally:
                edge.stop()
            load = json.loads(done.stdout.decode().strip().splitlines()[-1])
            contents = read_stream(client("kinesis", env), stream)
            on_stream = {
                e.payload.get("message_id") for e in contents.records() if e.source.value == "iot"
            }
            accepted = load["accepted"]
            lost = sum(1 for m in accepted if m not in on_stream)
            requests, wall = load["requests"], load["seconds"]
            errors = sum(load["errors"].values())
            error_rate = errors / requests if requests else 1.0
            detail = (
                f"{requests / wall:.0f} requests/s, {len(accepted) / wall:.0f} events/s, "
                f"error rate {error_rate:.2%} {load['errors'] or ''}, p50 {load['p50_ms']} ms, "
                f"p99 {load['p99_ms']} ms"
            )
            result.check(
                f"{connections} connections", f"{wall:.0f} s of one-reading POSTs",
                events_in=len(accepted), events_out=len(accepted) - lost, lost=lost,
                verdict=FAIL if lost or error_rate > 0.01 else PASS, detail=detail,
            )  # fmt: skip
            result.metrics[f"{connections} connections"] = detail
    assert result.overall() == PASS, [c for c in result.checks if c.verdict != PASS]
