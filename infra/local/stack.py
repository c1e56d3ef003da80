"""The local AWS stack: a moto server as a subprocess on a free loopback port, and Sluice's resources.

In: a working folder (for the server's log).
Out: a running endpoint (``LocalAws.endpoint``), its environment (``LocalAws.env``: the standard
``AWS_ENDPOINT_URL`` and test credentials, so every boto3 client and pyiceberg use it), and the
stream, buckets and table the pipeline uses (``create_resources``). ``stop()`` ends the server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalAws:
    """moto in server mode, over HTTP: real wire calls, nothing patched."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "sluice-local",
            "AWS_SECRET_ACCESS_KEY": "sluice-local",
        }

    def start(self, timeout: float = 30.0) -> LocalAws:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = (self.workdir / "moto.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited; see {self.workdir / 'moto.log'}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def apply_env(self) -> None:
        os.environ.update(self.env)

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Resources:
    stream: str = "sluice-events"
    shards: int = 2
    dead_letter_bucket: str = "sluice-dead-letters"
    log_bucket: str = "sluice-access-logs"
    checkpoint_table: str = "sluice-feed-checkpoints"


def client(service: str, env: dict[str, str]) -> Any:
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def create_resources(env: dict[str, str], resources: Resources = Resources()) -> Resources:
    """Create the stream (and wait until it is active), the buckets and the checkpoint table."""
    from edge_lambdas.feed_poller.checkpoints import create_checkpoint_table

    kinesis = client("kinesis", env)
    kinesis.create_stream(StreamName=resources.stream, ShardCount=resources.shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=resources.stream, WaiterConfig={"Delay": 0.2}
    )
    s3 = client("s3", env)
    for bucket in (resources.dead_letter_bucket, resources.log_bucket):
        s3.create_bucket(Bucket=bucket)
    create_checkpoint_table(client("dynamodb", env), resources.checkpoint_table)
    return resources
