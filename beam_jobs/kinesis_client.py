"""The boto3 Kinesis client of the Beam job's source, and botocore's exceptions as the reader needs them.

In: ``KinesisReadSettings`` (timeouts, region); endpoint and credentials come from the standard AWS
environment (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ...).
Out: ``kinesis_client``: a client for ``sluice.stream.kinesis.reader.KinesisStreamReader``;
``BOTOCORE_ERRORS``: which botocore exceptions mean a failed call, and which of them are
network-level and transient (``ClientErrors``).

Dead letters: none; this only makes a client.

Why here: the reader is SDK-free so another runtime can reuse it; this adapter is the one place that
knows botocore, its response parser and its exception hierarchy.
"""

from __future__ import annotations

from typing import Any, Final

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from sluice.stream.kinesis.failures import ClientErrors
from sluice.stream.kinesis.reader import KinesisClient
from sluice.stream.kinesis.settings import KinesisReadSettings

__all__ = ["BOTOCORE_ERRORS", "kinesis_client"]

BOTOCORE_ERRORS: Final = ClientErrors(
    failed_call=(ClientError, BotoCoreError),
    # Connection refused or reset, DNS, connect and read timeouts: no response to read, worth a retry.
    network=(BotoConnectionError, HTTPClientError),
)
"""botocore's exceptions, for ``KinesisStreamReader(..., errors=BOTOCORE_ERRORS)``."""


def _raw_timestamp(value: Any) -> Any:
    return value


def kinesis_client(settings: KinesisReadSettings) -> KinesisClient:
    """A boto3 ``kinesis`` client with the settings' timeouts and region, one attempt per call."""
    # botocore turns every ApproximateArrivalTimestamp into a datetime in the local time zone
    # (dateutil's tzlocal), about a third of the client's time per record when records are small;
    # the raw epoch number is all a batch needs (``sluice.stream.kinesis.records`` still accepts
    # datetimes and strings).
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_raw_timestamp
    )
    config = Config(
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        # One attempt per call: the reader retries itself, per shard and without blocking the
        # others, and counts throttling; botocore's own retries would hide both.
        retries={"total_max_attempts": 1},
    )
    client: KinesisClient = boto3.session.Session(botocore_session=session).client(
        "kinesis", region_name=settings.region_name, config=config
    )
    return client
