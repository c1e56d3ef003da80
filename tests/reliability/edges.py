"""Helpers of the reliability scenarios that drive the edges: ``sluice edge serve`` as a process of its
own, HTTP posts, the local stack's stream and bucket, and the job run over what landed.

Used by the poison, edge-fault and load scenarios (one copy); the job process and the table reading
come from ``job_testkit``.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job_testkit import Job, read_tables

from infra.local.stack import client, free_port

SHORT_RETRIES = {
    "SLUICE_RETRY_BASE_SECONDS": "0.02",
    "SLUICE_RETRY_CAP_SECONDS": "0.2",
    "SLUICE_RETRY_MAX_ATTEMPTS": "8",
    "SLUICE_RETRY_BUDGET_SECONDS": "3.0",
}


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "sluice-local",
        "AWS_SECRET_ACCESS_KEY": "sluice-local",
    }


def create_stack(env: dict[str, str], shards: int = 2) -> tuple[str, str]:
    """A new stream and dead-letter bucket on the endpoint of ``env``: (stream, bucket)."""
    name = f"sluice-rel-{uuid.uuid4().hex[:10]}"
    kinesis = client("kinesis", env)
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    client("s3", env).create_bucket(Bucket=name)
    return name, name


def clean_env() -> dict[str, str]:
    """This process' environment without SLUICE_* and AWS_* settings (the defaults apply)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}


@dataclass
class EdgeServer:
    """``python -m sluice edge serve`` on a free loopback port, a process of its own."""

    env: dict[str, str]
    stream: str
    bucket: str
    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> EdgeServer:
        self.port = self.port or free_port()
        env = {**clean_env(), **self.env, "POWERTOOLS_LOG_LEVEL": "WARNING"}
        command = [sys.executable, "-m", "sluice", "edge", "serve", "--port", str(self.port),
                   "--stream", self.stream, "--dead-letter-bucket", self.bucket, "--quiet"]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sluice edge serve exited; see {self.log}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sluice edge serve did not answer within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def post(
    url: str, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 20
) -> tuple[int, bytes]:
    """One POST on a fresh connection: (status, body); status 0 when the connection failed."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as error:
        return 0, str(error).encode()
    finally:
        connection.close()


@dataclass
class JobOutcome:
    code: int | None
    seconds: float
    last_line: str
    tracebacks: int
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def ids(self, table: str, key: str = "event_id") -> Counter[str]:
        return Counter(row[key] for row in self.tables.get(table, []))


def run_job(
    env: dict[str, str], stream: str, folder: Path, timeout: float = 600, **job: Any
) -> JobOutcome:
    """The stream job over ``stream`` from its start until idle; what it wrote and how it ended."""
    log = folder / "job.log"
    started = time.monotonic()
    running = Job({**clean_env(), **env}, folder / "state", log, stream=stream, **job).start()
    assert running.process is not None
    try:
        code: int | None = running.process.wait(timeout)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
        code = None
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    outcome = JobOutcome(code, seconds, lines[-1] if lines else "", text.count("Traceback"))
    if (folder / "state" / "catalog.db").exists():
        try:
            outcome.tables = read_tables(folder / "state")
        except Exception as error:  # noqa: BLE001 - reported as the scenario's finding
            outcome.last_line += f" (tables unreadable: {type(error).__name__}: {error})"
    return outcome
