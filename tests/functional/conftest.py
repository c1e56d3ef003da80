"""Fixtures for the edge tests: a fresh stream, bucket and queue per test on the session's moto server,
a fault-injecting proxy in front of it, and the edge handlers loaded from a prepared environment.

Helper modules (`faults`, `kinesis_reader`) sit next to this file; pytest puts this folder on sys.path.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from faults import FaultProxy

FAST_RETRIES = {
    # Short backoff and timeouts keep the give-up paths to about a second.
    "SLUICE_RETRY_BASE_SECONDS": "0.01",
    "SLUICE_RETRY_CAP_SECONDS": "0.05",
    "SLUICE_RETRY_MAX_ATTEMPTS": "6",
    "SLUICE_RETRY_BUDGET_SECONDS": "1.0",
    "SLUICE_CONNECT_TIMEOUT_SECONDS": "2",
    "SLUICE_READ_TIMEOUT_SECONDS": "5",
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kinesis(aws_env: str) -> Any:
    """A Kinesis client talking to moto directly (never through the fault proxy)."""
    return boto3.client("kinesis", endpoint_url=aws_env)


@pytest.fixture
def s3(aws_env: str) -> Any:
    return boto3.client("s3", endpoint_url=aws_env)


@pytest.fixture
def sqs(aws_env: str) -> Any:
    return boto3.client("sqs", endpoint_url=aws_env)


@pytest.fixture
def stream(kinesis: Any) -> str:
    name = _name("sluice-events")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    return name


@pytest.fixture
def dead_letter_bucket(s3: Any) -> str:
    name = _name("sluice-dlq")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def dead_letter_queue(sqs: Any) -> str:
    url: str = sqs.create_queue(QueueName=_name("sluice-dlq"))["QueueUrl"]
    return url


@pytest.fixture
def fault_proxy(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every boto3 client created after this fixture goes through the proxy."""
    proxy = FaultProxy(aws_env)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def edge_env(
    aws_env: str, stream: str, dead_letter_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The SLUICE_* environment of an edge Lambda, pointing at this test's stream and bucket."""
    env = {
        "SLUICE_STREAM_NAME": stream,
        "SLUICE_DEAD_LETTER_BUCKET": dead_letter_bucket,
        "POWERTOOLS_SERVICE_NAME": "sluice-edge-test",
        **FAST_RETRIES,
    }
    for variable in ("SLUICE_DEAD_LETTER_QUEUE_URL", "SLUICE_AGGREGATION", "SLUICE_LOG_FORMAT"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return env


@pytest.fixture
def load_handler(edge_env: dict[str, str]) -> Callable[[str], ModuleType]:
    """Import (or re-import) a handler module, so its cold start reads the current environment."""

    def load(module: str) -> ModuleType:
        if module in sys.modules:
            return importlib.reload(sys.modules[module])
        return importlib.import_module(module)

    return load


@pytest.fixture
def iot_handler(load_handler: Callable[[str], ModuleType]) -> ModuleType:
    return load_handler("edge_lambdas.iot_ingest.handler")


@pytest.fixture
def log_handler(load_handler: Callable[[str], ModuleType]) -> ModuleType:
    return load_handler("edge_lambdas.log_ingest.handler")
