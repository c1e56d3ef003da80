"""Shared fixtures. AWS tests talk to a real moto server over HTTP on 127.0.0.1 (never patched clients)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port for the whole session; stopped at the end."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(
        logging.ERROR
    )  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every boto3 client at the moto server through the standard AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


@pytest.fixture(scope="session")
def geoip_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The SYNTHETIC demo City and ASN databases (made-up networks, see ``devkit.geoip_build``)."""
    from devkit.geoip_build import build_demo_databases

    return build_demo_databases(tmp_path_factory.mktemp("geoip"))


@pytest.fixture
def local_aws(tmp_path: Path) -> Iterator[Any]:
    """moto in a process of its own (``infra.local.stack.LocalAws``), stopped when the test ends."""
    from infra.local.stack import LocalAws

    aws = LocalAws(tmp_path / "aws").start()
    try:
        yield aws
    finally:
        aws.stop()
